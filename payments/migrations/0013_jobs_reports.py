# Daily settlement reports (payments.services.reports). New tables only: the indexes on
# existing (large) tables are built online by 0014_jobs_indexes.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('payments', '0012_list_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='SettlementReport',
            fields=[
                ('id', models.CharField(editable=False, max_length=40, primary_key=True, serialize=False)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('livemode', models.BooleanField()),
                ('day', models.DateField()),
                ('currency', models.CharField(max_length=3)),
                ('payments_count', models.PositiveIntegerField(default=0)),
                ('amount_authorized', models.BigIntegerField(default=0)),
                ('captures_count', models.PositiveIntegerField(default=0)),
                ('amount_captured', models.BigIntegerField(default=0)),
                ('refunds_count', models.PositiveIntegerField(default=0)),
                ('amount_refunded', models.BigIntegerField(default=0)),
                ('fees', models.BigIntegerField(default=0)),
                ('net', models.BigIntegerField(default=0)),
                ('built_at', models.DateTimeField()),
                ('merchant', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='payments.merchant')),
            ],
            options={
                'indexes': [models.Index(fields=['merchant', 'livemode', '-day', '-id'], name='report_list_idx')],
                'constraints': [models.UniqueConstraint(fields=('merchant', 'livemode', 'day', 'currency'), name='one_report_per_merchant_day_currency')],
            },
        ),
        migrations.CreateModel(
            name='SettlementReportDay',
            fields=[
                ('day', models.DateField(primary_key=True, serialize=False)),
                ('built_at', models.DateTimeField()),
                ('reports', models.PositiveIntegerField(default=0, help_text='How many reports it made')),
            ],
        ),
    ]
