# Indexes for the list endpoints' filters (bench/explain.md shows the plans).

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
        ('payments', '0011_permission_groups'),
        ('providers', '0006_account_base_url_no_default'),
    ]

    operations = [
        AddIndexOnline(
            model_name='payment',
            index=models.Index(fields=['merchant', 'livemode', 'status', '-created_at', '-id'],
                               name='payment_status_list_idx'),
        ),
        AddIndexOnline(
            model_name='webhookoutbox',
            index=models.Index(fields=['merchant', 'livemode', 'type', '-id'],
                               name='event_type_list_idx'),
        ),
        AddIndexOnline(
            model_name='webhookoutbox',
            index=models.Index(fields=['merchant', 'livemode', 'created_at'],
                               name='event_created_list_idx'),
        ),
    ]
