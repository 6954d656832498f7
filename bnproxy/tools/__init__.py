"""Helper commands run as ``python -m bnproxy COMMAND`` (the proxy itself
runs under ``twistd bnproxy``)."""
