"""A candle's notional (sum of price × size) can exceed 22 integer digits for
large prices times large sizes within the message contract's bounds; widen it
so that no valid trade can overflow it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("market", "0002_series_tables")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE market_candle ALTER COLUMN notional TYPE numeric(50, 16)",
            "ALTER TABLE market_candle ALTER COLUMN notional TYPE numeric(38, 16)",
        )
    ]
