"""The built-in middlewares. Each is registered as a plugin factory in
``bnproxy/plugins/builtin.py``, exactly as a third-party one would be."""
