"""The TOML configuration file, read with the standard library.

Every key is checked here; an error names the key and the reason. The file's
values are the lowest precedence above the defaults (command line >
environment > file > defaults, see ``bnproxy.tap``).
"""

from __future__ import annotations

import tomllib
from typing import Any

from bnproxy.binance.markets import MARKET_NAMES
from bnproxy.config.reader import ConfigError

# file key -> (option name in tap.Options, kind)
SCALARS = {
    "port": ("port", str),
    "testnet": ("testnet", bool),
    "simulated_exchange": ("simulated-exchange", bool),
    "state_dir": ("state-dir", str),
    "log_format": ("log-format", str),
    "forwarded_header": ("forwarded-header", str),
}
LISTS = {
    "listen": "listen",
    "trusted_proxies": "trusted_proxies",
    "admin_allow": "admin_allow",
}
TABLES = {
    "timeouts": {"connect": "connect-timeout", "response": "response-timeout",
                 "body": "body-timeout"},
    "server": {"header_timeout": "header-timeout", "body_timeout": "client-body-timeout",
               "max_body": "max-body", "max_headers": "max-headers",
               "max_header_bytes": "max-header-bytes",
               "max_connections_per_client": "max-connections-per-client",
               "keepalive_timeout": "keepalive-timeout", "send_timeout": "send-timeout",
               "drain_timeout": "drain-timeout"},
}


def load(path: str) -> dict[str, Any]:
    """Read ``path`` into option values keyed like ``tap.Options``; plus
    ``chain`` (list) and ``middleware_settings`` (name -> table)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: not valid TOML: {e}") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: str = "config") -> dict[str, Any]:
    out: dict[str, Any] = {}

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"config {path}: {key}: {reason}")

    for key, value in data.items():
        if key in SCALARS:
            option, kind = SCALARS[key]
            if kind is bool and not isinstance(value, bool):
                raise fail(key, f"expected true or false, got {value!r}")
            if kind is str and not isinstance(value, (str, int)):
                raise fail(key, f"expected a string, got {value!r}")
            out[option] = str(value) if kind is str else value
        elif key in LISTS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(key, "expected a list of strings")
            out[LISTS[key]] = list(value)
        elif key in ("upstream", "stream_upstream"):
            if not isinstance(value, dict):
                raise fail(key, "expected a table of MARKET = URL")
            for market, url in value.items():
                if market not in MARKET_NAMES:
                    raise fail(f"{key}.{market}",
                               f"unknown market (markets: {', '.join(MARKET_NAMES)})")
                if not isinstance(url, str):
                    raise fail(f"{key}.{market}", "expected a URL string")
            out["upstreams" if key == "upstream" else "stream_upstreams"] = dict(value)
        elif key in TABLES:
            if not isinstance(value, dict):
                raise fail(key, "expected a table")
            for sub, v in value.items():
                option = TABLES[key].get(sub)
                if option is None:
                    raise fail(f"{key}.{sub}", "unknown setting")
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise fail(f"{key}.{sub}", f"expected a number, got {v!r}")
                out[option] = v
        elif key == "chain":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(key, "expected a list of middleware names")
            out["chain"] = list(value)
        elif key == "middleware":
            if not isinstance(value, dict) or not all(isinstance(v, dict)
                                                      for v in value.values()):
                raise fail(key, "expected [middleware.NAME] tables")
            out["middleware_settings"] = {name: dict(t) for name, t in value.items()}
        else:
            raise fail(key, "unknown setting")
    return out
