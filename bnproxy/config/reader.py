"""Re-exports :mod:`bnproxy.settings` (``ConfigError``, ``SettingsReader``,
``parse_middleware_spec``), where they live so that ``bnproxy.chain`` need
not import ``bnproxy.config``."""

from bnproxy.settings import ConfigError, SettingsReader, parse_middleware_spec

__all__ = ["ConfigError", "SettingsReader", "parse_middleware_spec"]
