"""Idempotency keys record the object their request created or started changing, so that a
key whose request died can be recovered instead of answering 409 forever.

Keys claimed before this migration recorded nothing: `recoverable` is False for them (and,
by its database default, for any key a process still running older code claims), so they
keep today's behaviour.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('payments', '0007_payment_method_cvc_until_authorization'),
    ]

    operations = [
        migrations.AddField(
            model_name='idempotencykey',
            name='object_id',
            field=models.CharField(blank=True, db_default='', default='', max_length=64),
        ),
        migrations.AddField(
            model_name='idempotencykey',
            name='recoverable',
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
