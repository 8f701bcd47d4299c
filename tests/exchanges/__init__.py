"""Local test exchanges that speak a real venue's REST API, for running real ccxt code offline."""
