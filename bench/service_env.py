"""The settings a benchmark's or chaos run's deployment gets so that every order of its load is a real accepted and
filled one, never a denial (the limits wide open, no stop losses, no dedupe window): shared by ``bench/harness.py``
and ``bench/chaos/topology.py``, each laying its own (pairs, balance, log level, NATS) over them."""

from __future__ import annotations

ACCEPT_EVERY_ORDER: dict[str, str] = {
    "HOST": "127.0.0.1",
    "MARKET_DATA": "synthetic",
    "MAX_ORDERS_PER_SECOND": "1000000",
    "MAX_POSITION_SIZE": "1",
    "MAX_TOTAL_EXPOSURE": "100",
    "MAX_DAILY_LOSS": "1",
    "PRICE_BAND_PERCENT": "0",
    "ALLOW_SHORT": "true",
    "STOP_LOSS_ENABLED": "false",
    "SIGNAL_DEDUPE_WINDOW": "0",
    "MIN_CONFIDENCE": "0",
    "DEFAULT_ORDER_TIMEOUT": "0",
}
