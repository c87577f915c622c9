"""The admin's two permission groups (docs/operations/audit.md, "Who may do what"):

- `payment operators` may act: view everything, change what the operator actions change
  (payments for the resolution actions, API keys to revoke them, provider accounts and the
  merchants' routing and retry rules).
- `support` may only look: view permissions, nothing else.

Neither group may add, change or delete the audit log (nobody may: its admin is read-only and
the database refuses UPDATE and DELETE). Superusers are in no group and may do everything the
admin offers. Self-contained (no app code imported), as migrations must be.
"""

from django.db import migrations

APPS = ("payments", "providers")
OPERATOR_CHANGES = (
    ("payments", "payment"),
    ("payments", "apikey"),
    ("providers", "provideraccount"),
    ("providers", "routingrule"),
    ("providers", "retryrule"),
)
GROUPS = ("payment operators", "support")


def _ensure_permissions(apps):
    """Permissions are created after migrate (post_migrate); a fresh database has none yet."""
    from django.contrib.auth.management import create_permissions

    for label in APPS:
        app_config = apps.get_app_config(label)
        app_config.models_module = True  # historical apps have none; create_permissions asks
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None


def create_groups(apps, schema_editor):
    _ensure_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    views = Permission.objects.filter(content_type__app_label__in=APPS,
                                      codename__startswith="view_")
    changes = Permission.objects.none()
    for app_label, model in OPERATOR_CHANGES:
        changes = changes | Permission.objects.filter(content_type__app_label=app_label,
                                                      content_type__model=model,
                                                      codename=f"change_{model}")
    operators, _ = Group.objects.get_or_create(name="payment operators")
    operators.permissions.set(list(views) + list(changes))
    support, _ = Group.objects.get_or_create(name="support")
    support.permissions.set(list(views))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("payments", "0010_webhooks_and_audit_log"),
        ("providers", "0006_account_base_url_no_default"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
