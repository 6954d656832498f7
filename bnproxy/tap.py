"""``twistd bnproxy``: command-line options and ``makeService``."""

from __future__ import annotations

import sys

from twisted.python import usage

from bnproxy.binance.markets import MARKET_NAMES, check_base_url
from bnproxy.config import ProxyConfig
from bnproxy.settings import ConfigError, parse_middleware_spec


def endpoint_description(value: str) -> str:
    """Digits mean ``tcp:N``; anything else is an endpoint string."""
    return f"tcp:{value}" if value.isdigit() else value


def _market_url(option: str, value: str, schemes: tuple[str, ...]) -> tuple[str, str]:
    market, sep, url = value.partition("=")
    if not sep:
        raise usage.UsageError(f"--{option} {value!r}: expected MARKET=URL")
    if market not in MARKET_NAMES:
        raise usage.UsageError(
            f"--{option} {value!r}: unknown market {market!r} (markets: {', '.join(MARKET_NAMES)})")
    try:
        return market, check_base_url(url, schemes)
    except ValueError as e:
        raise usage.UsageError(f"--{option}: {e}") from None


def _positive(name: str):
    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--{name} expects a number of seconds, got {value!r}") from None
        if not number > 0:
            raise ValueError(f"--{name} must be positive, got {value!r}")
        return number
    coerce.coerceDoc = "Seconds."  # type: ignore[attr-defined]
    return coerce


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("A Binance API proxy for trading bots: forwards every REST request "
                "untouched, answers market data from cache and streams, and keeps "
                "the fleet inside one weight budget.")

    optFlags = [
        ["testnet", None, "Use Binance's testnet hosts for every market."],
        ["simulated-exchange", None,
         "Start an in-process fake exchange and use it as every market's upstream."],
    ]
    optParameters = [
        ["port", "p", None, "Where to listen: digits (tcp:N) or an endpoint string. "
                            "Default 8080."],
        ["connect-timeout", None, 5.0, "Upstream connect deadline.", _positive("connect-timeout")],
        ["response-timeout", None, 10.0, "Deadline for upstream response headers.",
         _positive("response-timeout")],
        ["body-timeout", None, 30.0, "Deadline for a whole upstream response body.",
         _positive("body-timeout")],
        ["forwarded-header", None, "x-forwarded-for",
         "Header read from trusted proxies: x-forwarded-for or forwarded."],
        ["state-dir", None, ".", "Directory for state files (the ban state)."],
        ["log-format", None, "text", "Access log lines: text or json."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["upstreams"] = {}
        self["stream_upstreams"] = {}
        self["middleware"] = []
        self["trusted_proxies"] = []
        self["admin_allow"] = []

    def opt_listen(self, value: str) -> None:
        """Another endpoint to listen on (repeatable)."""
        self["listen"].append(endpoint_description(value))

    def opt_upstream(self, value: str) -> None:
        """MARKET=URL: the REST base URL of a market (repeatable).
        Markets: spot, usdm, coinm, options, pm."""
        market, url = _market_url("upstream", value, ("http", "https"))
        self["upstreams"][market] = url

    def opt_stream_upstream(self, value: str) -> None:
        """MARKET=URL: the websocket base URL of a market (repeatable)."""
        market, url = _market_url("stream-upstream", value, ("ws", "wss"))
        self["stream_upstreams"][market] = url

    def opt_middleware(self, value: str) -> None:
        """NAME[:key=value,...]: a middleware, in chain order (repeatable;
        replaces the default chain)."""
        try:
            self["middleware"].append(parse_middleware_spec(value))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_trusted_proxy(self, value: str) -> None:
        """CIDR of a proxy in front of bnproxy whose forwarding header is
        believed (repeatable)."""
        self["trusted_proxies"].append(value)

    def opt_admin_allow(self, value: str) -> None:
        """CIDR admitted to admin resources (/health, /cache, /metrics);
        repeatable; default loopback only."""
        self["admin_allow"].append(value)

    def postOptions(self) -> None:  # noqa: N802
        listen = [endpoint_description(self["port"])] if self["port"] else []
        listen += self["listen"]
        self["listen"] = listen or ["tcp:8080"]
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")
        if self["forwarded-header"] not in ("x-forwarded-for", "forwarded"):
            raise usage.UsageError("--forwarded-header must be x-forwarded-for or forwarded")
        if self["simulated-exchange"] and (self["upstreams"] or self["testnet"]):
            raise usage.UsageError("--simulated-exchange replaces --upstream and --testnet")
        from twisted.internet.endpoints import serverFromString

        from twisted.internet import reactor  # the entry point may touch it

        for description in self["listen"]:
            try:
                serverFromString(reactor, description)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise usage.UsageError(f"bad listen endpoint {description!r}: {e}") from None

    def parseOptions(self, options=None) -> None:  # noqa: N802
        """As usage.Options, but a bad option or value exits with one line
        (twistd would print its whole usage text first)."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"twistd bnproxy: error: {e} (see --help)") from None

    def config(self) -> ProxyConfig:
        return ProxyConfig(
            listen=tuple(self["listen"]),
            testnet=bool(self["testnet"]),
            upstreams=dict(self["upstreams"]),
            stream_upstreams=dict(self["stream_upstreams"]),
            middleware=tuple(self["middleware"]) if self["middleware"] else ProxyConfig().middleware,
            trusted_proxies=tuple(self["trusted_proxies"]),
            forwarded_header=self["forwarded-header"],
            admin_allow=tuple(self["admin_allow"]) or ProxyConfig().admin_allow,
            connect_timeout=self["connect-timeout"],
            response_timeout=self["response-timeout"],
            body_timeout=self["body-timeout"],
            state_dir=self["state-dir"],
            log_format=self["log-format"],
            simulated_exchange=bool(self["simulated-exchange"]),
        )


def makeService(options: Options):  # noqa: N802
    import gc

    from twisted.internet import reactor

    from bnproxy.service import ProxyService

    config = options.config()
    try:
        if config.simulated_exchange:
            from bnproxy.testing.simulated import with_simulated_exchange

            return with_simulated_exchange(reactor, config, ProxyService)
        service = ProxyService(reactor, config)
    except ConfigError as e:
        sys.exit(f"twistd bnproxy: error: {e}")
    # Everything built so far lives as long as the process: keep the cyclic
    # collector from rescanning it (it showed as multi-millisecond p99 pauses).
    gc.freeze()
    return service


ENV_OPTIONS = {
    # variable: (option, repeatable)
    "BNPROXY_PORT": ("--port", False),
    "BNPROXY_LISTEN": ("--listen", True),
    "BNPROXY_UPSTREAM": ("--upstream", True),
    "BNPROXY_STREAM_UPSTREAM": ("--stream-upstream", True),
    "BNPROXY_MIDDLEWARE": ("--middleware", True),
    "BNPROXY_TRUSTED_PROXY": ("--trusted-proxy", True),
    "BNPROXY_ADMIN_ALLOW": ("--admin-allow", True),
    "BNPROXY_CONNECT_TIMEOUT": ("--connect-timeout", False),
    "BNPROXY_RESPONSE_TIMEOUT": ("--response-timeout", False),
    "BNPROXY_BODY_TIMEOUT": ("--body-timeout", False),
    "BNPROXY_FORWARDED_HEADER": ("--forwarded-header", False),
    "BNPROXY_STATE_DIR": ("--state-dir", False),
    "BNPROXY_LOG_FORMAT": ("--log-format", False),
}
ENV_FLAGS = {"BNPROXY_TESTNET": "--testnet", "BNPROXY_SIMULATED_EXCHANGE": "--simulated-exchange"}


def args_from_env(environ) -> list[str]:
    """Command-line arguments from ``BNPROXY_*`` variables. Repeatable options
    take several values separated by spaces (``BNPROXY_UPSTREAM="spot=URL
    usdm=URL"``); flags take 1/true/yes."""
    args: list[str] = []
    for var, (option, repeatable) in ENV_OPTIONS.items():
        value = environ.get(var, "").strip()
        if not value:
            continue
        for item in value.split() if repeatable else [value]:
            args += [option, item]
    for var, flag in ENV_FLAGS.items():
        if environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            args.append(flag)
    return args
