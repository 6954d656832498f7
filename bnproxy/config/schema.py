"""Every setting of ``twistd bnproxy``, declared once.

A :class:`Setting` names the option (``--connect-timeout``), its type and
validation, default, help, the ``BNPROXY_*`` variable, the TOML key and the
``ProxyConfig`` attribute it fills. The command line (``bnproxy.tap``), the
environment and the TOML reader (``bnproxy.config.sources``), the model
(``bnproxy.config.model``), ``--help`` and the example file
(``python -m bnproxy.config.example``) are all derived from :data:`SETTINGS`.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from bnproxy.binance.markets import MARKET_NAMES, check_base_url
from bnproxy.config.reader import ConfigError, parse_middleware_spec

#: The headers a trusted proxy may name the client in (the first: the default).
FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")

#: The default chain, in order. Built-in middlewares register as plugins.
DEFAULT_CHAIN: tuple[str, ...] = ("logger", "allowlist", "streams", "cache", "ratelimit")


class SettingError(ValueError):
    """A value a setting refuses; the message says why (the caller names the
    key and the source)."""


def endpoint_description(value: str) -> str:
    """Digits mean ``tcp:N``; anything else is an endpoint string."""
    return f"tcp:{value}" if value.isdigit() else value


# -- value kinds -------------------------------------------------------------------------------
# Each coerces a raw value (a string from argv or the environment, or a TOML
# value) to the model's type, or raises SettingError.

def _number(integer: bool, above: float | None = None, at_most: float | None = None,
            at_least: float | None = None) -> Callable[[Any], Any]:
    def coerce(value: Any) -> float | int:
        if isinstance(value, bool):
            raise SettingError(f"expected a number, got {value!r}")
        try:
            number: float | int = int(str(value).replace("_", "")) if integer else float(value)
        except (TypeError, ValueError):
            kind = "a whole number" if integer else "a number"
            raise SettingError(f"expects {kind}, got {value!r}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise SettingError(f"expects a finite number, got {value!r}")
        if above is not None and not number > above:
            raise SettingError(f"must be greater than {above:g}, got {value!r}")
        if at_least is not None and number < at_least:
            raise SettingError(f"must be at least {at_least:g}, got {value!r}")
        if at_most is not None and number > at_most:
            raise SettingError(f"must be at most {at_most:g}, got {value!r}")
        return number
    return coerce


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SettingError(f"expected a string, got {value!r}")
    return str(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise SettingError(f"expected true or false (1/true/yes/on, 0/false/no/off), got {value!r}")


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SettingError("expected a list of strings")
    return tuple(value)


def _port(value: Any) -> str:
    text = _text(value)
    if text.isdigit() and not 0 <= int(text) <= 65535:
        raise SettingError(f"must be a port number from 0 to 65535, got {text}")
    return endpoint_description(text)


def _markets(schemes: tuple[str, ...]) -> Callable[[Any], dict[str, str]]:
    def coerce(value: Any) -> dict[str, str]:
        if isinstance(value, (str, list, tuple)):
            pairs = {}
            for item in _strings(value):
                market, sep, url = item.partition("=")
                if not sep:
                    raise SettingError(f"{item!r}: expected MARKET=URL")
                pairs[market] = url
            value = pairs
        if not isinstance(value, Mapping):
            raise SettingError("expected a table of MARKET = URL")
        out = {}
        for market, url in value.items():
            if market not in MARKET_NAMES:
                raise SettingError(f"unknown market {market!r} (markets: "
                                   f"{', '.join(MARKET_NAMES)})")
            if not isinstance(url, str):
                raise SettingError(f"{market}: expected a URL string")
            try:
                out[market] = check_base_url(url, schemes)
            except ValueError as e:
                raise SettingError(f"{market}: {e}") from None
        return out
    return coerce


#: Redis's own range for a database number (its ``databases`` setting is at
#: most INT_MAX).
_REDIS_DB_MAX = 2**31 - 2


def _shared_state(value: Any) -> str:
    text = _text(value).strip()
    if text in ("", "none"):
        return ""
    from urllib.parse import urlsplit

    from bnproxy.cluster.url import RedisURLError, parse_redis_url
    try:
        url = parse_redis_url(text)
    except RedisURLError as e:
        raise SettingError(str(e)) from None
    if urlsplit(text).port == 0:  # (parse_redis_url reads 0 as "no port": 6379)
        raise SettingError("the shared-state URL's port must be from 1 to 65535, not 0")
    if url.db > _REDIS_DB_MAX:
        raise SettingError(f"the shared-state URL's database must be from 0 to "
                           f"{_REDIS_DB_MAX}, not {url.db}")
    return text


def _egress(value: Any) -> tuple[str, ...]:
    """Source addresses: each an IP address of its own (not the unspecified
    ``0.0.0.0``/``::``, which is every address and so no budget's owner),
    each once. Whether this host owns them is checked at start-up."""
    out: list[str] = []
    for item in _strings(value):
        try:
            ip = ipaddress.ip_address(item.strip().strip("[]"))
        except ValueError:
            raise SettingError(f"{item!r} is not an IP address") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified or ip.is_multicast:
            kind = "the unspecified address" if ip.is_unspecified else "a multicast address"
            raise SettingError(f"{item} is {kind}, not one source address of this host "
                               "(name each address requests leave from)")
        if str(ip) in out:
            raise SettingError(f"{ip} is given twice (each address has one budget)")
        out.append(str(ip))
    return tuple(out)


def _chain(value: Any) -> tuple[str, ...]:
    specs = tuple(spec for item in _strings(value) for spec in item.split())
    for spec in specs:
        try:
            name, _ = parse_middleware_spec(spec)
        except ConfigError as e:
            raise SettingError(str(e).partition(": ")[2]) from None
        if name.startswith("-"):
            raise SettingError(f"{spec!r}: the chain lists middlewares to run, not removals")
    if len({parse_middleware_spec(s)[0] for s in specs}) != len(specs):
        raise SettingError("names a middleware twice")
    return specs


def _choice(*choices: str) -> Callable[[Any], str]:
    def coerce(value: Any) -> str:
        text = _text(value)
        if text not in choices:
            raise SettingError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text
    return coerce


@attrs.frozen
class Setting:
    """One setting. ``attr`` is the ``ProxyConfig`` attribute it fills
    (``server.max_body`` for a nested one); ``toml`` its key in the file
    (``timeouts.connect``), None when the file cannot set it; ``repeatable``
    options collect every occurrence (the environment separates them with
    spaces)."""

    name: str
    coerce: Callable[[Any], Any]
    default: Any
    help: str
    attr: str | None
    toml: str | None
    short: str | None = None
    flag: bool = False
    repeatable: bool = False
    metavar: str = ""

    @property
    def env(self) -> str:
        return "BNPROXY_" + self.name.upper().replace("-", "_")


def _s(name: str, coerce: Callable[[Any], Any], default: Any, help: str, attr: str | None,
       toml: str | None, **kw: Any) -> Setting:
    return Setting(name, coerce, default, help, attr, toml, **kw)


_HOUR = 3600.0
#: Every deadline: more than 0 and at most an hour (a longer wait is a
#: mistake, and 1e308 overflowed the reactor's timers).
_SECONDS = _number(False, 0, _HOUR)

SETTINGS: tuple[Setting, ...] = (
    _s("config", _text, None, "A TOML configuration file (see bnproxy.example.toml).", None, None,
       short="c", metavar="FILE"),
    _s("port", _port, "8080", "Where to listen: digits (tcp:N) or a Twisted endpoint string.",
       None, "port", short="p", metavar="PORT"),
    _s("listen", lambda v: tuple(_port(x) for x in _strings(v)), (),
       "Another endpoint to listen on (repeatable).", None, "listen", repeatable=True,
       metavar="ENDPOINT"),
    _s("upstream", _markets(("http", "https")), {},
       "MARKET=URL: a market's REST base URL (repeatable). Markets: "
       + ", ".join(MARKET_NAMES) + ".", "upstreams", "upstream", repeatable=True,
       metavar="MARKET=URL"),
    _s("stream-upstream", _markets(("ws", "wss")), {},
       "MARKET=URL: a market's websocket base URL (repeatable).", "stream_upstreams",
       "stream_upstream", repeatable=True, metavar="MARKET=URL"),
    _s("upstream-ca", _strings, (),
       "PEM file of extra CA certificates trusted for upstream https/wss, added to the "
       "platform store (SSL_CERT_FILE/SSL_CERT_DIR); repeatable.", "upstream_ca", "upstream_ca",
       repeatable=True, metavar="FILE"),
    _s("testnet", _flag, False, "Use Binance's testnet hosts for every market.", "testnet",
       "testnet", flag=True),
    _s("simulated-exchange", _flag, False,
       "Start an in-process fake exchange and use it as every market's upstream "
       "(try bnproxy offline).", "simulated_exchange", "simulated_exchange", flag=True),
    _s("middleware", _strings, (),
       "NAME[:key=value,...]: set a middleware's settings, adding it to the chain (after the "
       "allowlist) when it is not there yet; -NAME removes one (repeatable).", None, None,
       repeatable=True, metavar="SPEC"),
    _s("middleware-chain", _chain, DEFAULT_CHAIN,
       "The whole middleware chain, in order (NAME[:key=value,...] each; repeatable or "
       "space-separated): replaces the default chain.", None, "chain", repeatable=True,
       metavar="NAMES"),
    _s("trusted-proxy", _strings, (),
       "CIDR of a proxy in front of bnproxy whose forwarding header is believed (repeatable).",
       "trusted_proxies", "trusted_proxies", repeatable=True, metavar="CIDR"),
    _s("forwarded-header", _choice(*FORWARDED_HEADERS), FORWARDED_HEADERS[0],
       "Header read from trusted proxies: x-forwarded-for or forwarded.", "forwarded_header",
       "forwarded_header"),
    _s("admin-allow", _strings, ("127.0.0.0/8", "::1/128"),
       "CIDR admitted to admin resources (/health, /metrics, /cache, /dashboard); "
       "repeatable.", "admin_allow", "admin_allow", repeatable=True, metavar="CIDR"),
    _s("state-dir", _text, ".",
       "Directory for state files (the ban state, the symbol lists, the kline series); "
       "must be writable.",
       "state_dir", "state_dir", metavar="DIR"),
    _s("discard-ban-state", _flag, False,
       "Start without the ban state file's bans: the way out when the file is unreadable "
       "(sets [middleware.ratelimit] discard_ban_state).", None, None, flag=True),
    _s("log-format", _choice("text", "json"), "text",
       "Log lines: text, or json (JSON Lines, for both logs).", "log_format", "log_format"),
    _s("log-level", _choice("debug", "info", "warn", "error"), "info",
       "Operational events at this level and above.", "log_level", "log_level"),
    _s("access-log", _text, "-",
       "Where access lines go: - (standard output), none, or a file (reopened on SIGUSR1).",
       "access_log", "access_log", metavar="TARGET"),
    _s("metrics-clients", _number(True, 0, 10_000), 64,
       "Distinct clients named on /metrics and in /health's tables; the rest are 'other'.",
       "metrics_clients", "metrics_clients"),
    _s("connect-timeout", _SECONDS, 5.0, "Upstream connect deadline, seconds.",
       "connect_timeout", "timeouts.connect"),
    _s("response-timeout", _SECONDS, 10.0, "Deadline for upstream response headers, seconds.",
       "response_timeout", "timeouts.response"),
    _s("body-timeout", _SECONDS, 30.0, "Deadline for a whole upstream response body, seconds.",
       "body_timeout", "timeouts.body"),
    _s("header-timeout", _SECONDS, 60.0,
       "Absolute deadline for a bot's request line and headers, seconds (slowloris).",
       "server.header_timeout", "server.header_timeout"),
    _s("client-body-timeout", _SECONDS, 60.0,
       "Absolute deadline for a bot's request body, seconds.", "server.body_timeout",
       "server.body_timeout"),
    # The server limits' defaults are nginx's: client_max_body_size 1m,
    # large_client_header_buffers 4 8k, keepalive_timeout 75 s.
    _s("max-body", _number(True, 0, 2**30), 1024 * 1024,
       "Largest request body accepted, bytes (413 beyond).", "server.max_body",
       "server.max_body"),
    _s("max-headers", _number(True, 0, 10_000), 100,
       "Most request headers accepted (400 beyond).", "server.max_headers",
       "server.max_headers"),
    _s("max-header-bytes", _number(True, 0, 16 * 2**20), 32 * 1024,
       "Largest request line plus headers, bytes (400 beyond).", "server.max_header_bytes",
       "server.max_header_bytes"),
    _s("max-connections-per-client", _number(True, 0, 1_000_000),
       256, "Open connections allowed per client address.",
       "server.max_connections_per_client", "server.max_connections_per_client"),
    _s("keepalive-timeout", _SECONDS, 75.0,
       "Idle keep-alive connections close after this, seconds.", "server.keepalive_timeout",
       "server.keepalive_timeout"),
    _s("send-timeout", _SECONDS, 60.0,
       "A bot that stops reading is cut off after this, seconds.", "server.send_timeout",
       "server.send_timeout"),
    _s("shared-state", _shared_state, "",
       "redis://[user:password@]HOST:PORT/DB (or rediss://): share the weight budget, bans "
       "and client ledger with every instance naming the same Redis; default: in-process.",
       "shared_state", "shared_state", metavar="URL"),
    _s("shared-state-deadline", _number(False, 0, 1), 0.05,
       "Longest a budget call waits on the shared state before deciding locally, seconds.",
       "shared_state_deadline", "shared_state_deadline"),
    _s("shared-state-min-instances", _number(True, 0, 256), 1,
       "While the shared state is away, divide each budget by at least this many instances.",
       "shared_state_min_instances", "shared_state_min_instances"),
    _s("egress", _egress, (),
       "A source address of this host requests leave from (repeatable; each has its own "
       "budget and bans).", "egress", "egress", repeatable=True, metavar="ADDRESS"),
    _s("workers", _number(True, 0, 64), 1,
       "Processes serving the listening socket (more than 1 needs --shared-state).",
       "workers", "workers", metavar="N"),
    _s("drain-timeout", _number(False, at_least=0, at_most=_HOUR), 30.0,
       "On SIGTERM, in-flight requests get this long to finish, seconds.",
       "server.drain_timeout", "server.drain_timeout"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
BY_TOML: dict[str, Setting] = {s.toml: s for s in SETTINGS if s.toml}
# The file's own keys beside the settings: the chain and the middleware tables.
FILE_KEYS = ("middleware",)


def tables() -> list[str]:
    """The TOML tables that hold settings (``timeouts``, ``server``)."""
    return sorted({key.split(".")[0] for key in BY_TOML if "." in key})


BY_ATTR: dict[str, Setting] = {s.attr: s for s in SETTINGS if s.attr}
#: Where the proxy listens when neither --port nor --listen is given.
DEFAULT_LISTEN: tuple[str, ...] = (endpoint_description(BY_NAME["port"].default),)


def default_chain() -> Sequence[str]:
    return DEFAULT_CHAIN


def default(attr: str) -> Any:
    """The default of the setting that fills ``ProxyConfig.<attr>``
    (``server.max_body`` for a nested one): what the model declares its
    fields with, so that each default is written once, here."""
    return BY_ATTR[attr].default
