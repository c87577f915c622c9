# Indexes for the cleanup and report jobs on existing tables, built online on PostgreSQL
# (CREATE INDEX CONCURRENTLY, as 0012_list_indexes): abandoned payments by age, a day's
# payment events, merchant events and applied provider webhook events by age.

from importlib import import_module

from django.db import migrations, models

# CREATE INDEX CONCURRENTLY on PostgreSQL, a plain CREATE INDEX on SQLite (see 0012)
AddIndexOnline = import_module("payments.migrations.0012_list_indexes").AddIndexOnline


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction
    atomic = False

    dependencies = [
        ('payments', '0013_jobs_reports'),
    ]

    operations = [
        AddIndexOnline(
            model_name='payment',
            index=models.Index(condition=models.Q(('status', 'requires_confirmation')), fields=['created_at'], name='payment_awaiting_confirm_idx'),
        ),
        AddIndexOnline(
            model_name='paymentevent',
            index=models.Index(fields=['created_at'], name='payment_event_created_idx'),
        ),
        AddIndexOnline(
            model_name='providerwebhookevent',
            index=models.Index(fields=['processed_at'], name='provider_event_processed_idx'),
        ),
        AddIndexOnline(
            model_name='webhookoutbox',
            index=models.Index(fields=['created_at'], name='event_created_idx'),
        ),
    ]
