# Indexes for the cleanup and report jobs on existing tables, built online on PostgreSQL
# (CREATE INDEX CONCURRENTLY, as 0012_list_indexes): abandoned payments by age, a day's
# payment events, merchant events and applied provider webhook events by age.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexOnline(AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL, so that building it on a large table does
    not block payments being written meanwhile; a plain CREATE INDEX elsewhere (the embedded
    SQLite default has no concurrent build, and nothing to block)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(self, app_label, schema_editor,
                                                     from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(self, app_label, schema_editor,
                                                      from_state, to_state)


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
