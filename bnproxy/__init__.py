"""bnproxy: a Binance API proxy for trading bots."""

__version__ = "0.1.0"
