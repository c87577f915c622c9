# Partial indexes for the gauges the metrics scrape reads (ops/metrics.py): each covers only
# the rows it counts (unresolved payments, unrelayed events, pending deliveries), so a scrape
# reads a handful of index entries however large the tables grow.

from importlib import import_module

from django.db import migrations, models

# CREATE INDEX CONCURRENTLY on PostgreSQL, a plain CREATE INDEX on SQLite (see 0012)
AddIndexOnline = import_module("payments.migrations.0012_list_indexes").AddIndexOnline


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction
    atomic = False

    dependencies = [
        ('payments', '0014_jobs_indexes'),
    ]

    operations = [
        AddIndexOnline(
            model_name='payment',
            index=models.Index(condition=models.Q(('status', 'unresolved')),
                               fields=['updated_at'], name='payment_unresolved_idx'),
        ),
        AddIndexOnline(
            model_name='webhookoutbox',
            index=models.Index(condition=models.Q(('relayed_at__isnull', True)),
                               fields=['created_at'], name='event_unrelayed_idx'),
        ),
        AddIndexOnline(
            model_name='webhookdelivery',
            index=models.Index(condition=models.Q(('status', 'pending')),
                               fields=['created_at'], name='delivery_pending_idx'),
        ),
    ]
