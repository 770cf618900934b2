"""Create the time-series tables in the storage mode this database supports:
TimescaleDB hypertables when the extension is available, native range
partitions otherwise (see market/storage.py)."""

from django.db import migrations


def create(apps, schema_editor):
    from market.storage import create_series_tables

    create_series_tables(schema_editor)


def drop(apps, schema_editor):
    from market.storage import drop_series_tables

    drop_series_tables(schema_editor)


class Migration(migrations.Migration):
    dependencies = [("market", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
