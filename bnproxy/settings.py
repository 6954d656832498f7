"""Moved to :mod:`bnproxy.plugin` (and ``bnproxy.config.reader``); this path
re-exports for one release."""

from bnproxy.config.reader import ConfigError, SettingsReader, parse_middleware_spec

__all__ = ["ConfigError", "SettingsReader", "parse_middleware_spec"]
