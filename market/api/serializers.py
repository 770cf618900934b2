from rest_framework import serializers


class SymbolSerializer(serializers.Serializer):
    symbol = serializers.CharField(source="ticker")
    name = serializers.CharField()


class TradeSerializer(serializers.Serializer):
    """Prices and sizes are exact decimal strings ("187.23"), never floats."""

    id = serializers.CharField(source="trade_id")
    symbol = serializers.CharField()
    time = serializers.DateTimeField()
    seq = serializers.IntegerField()
    price = serializers.DecimalField(max_digits=20, decimal_places=8, normalize_output=True)
    size = serializers.DecimalField(max_digits=24, decimal_places=8, normalize_output=True)
    side = serializers.CharField()


class LimitSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)
