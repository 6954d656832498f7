"""``twistd bnproxy``: command-line options and ``makeService``.

Configuration comes from four places, in this precedence: the command line,
``BNPROXY_*`` environment variables, the TOML file (``--config`` or
``BNPROXY_CONFIG``), the defaults. Every error names the key and the reason
and stops start-up with one line, before anything listens.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from bnproxy.config import sources as configfile
from bnproxy.binance.markets import MARKET_NAMES, check_base_url
from bnproxy.config.model import DEFAULT_CHAIN, ProxyConfig, ServerLimits
from bnproxy.config.reader import ConfigError, parse_middleware_spec


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


def _number(name: str, integer: bool = False, minimum: float = 0.0):
    def coerce(value: Any) -> float:
        try:
            number = int(str(value)) if integer else float(value)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ValueError(f"--{name} expects {kind}, got {value!r}") from None
        if not number > minimum:
            raise ValueError(f"--{name} must be greater than {minimum:g}, got {value!r}")
        return number
    coerce.coerceDoc = ""  # type: ignore[attr-defined]
    return coerce


_LIMITS = ServerLimits()
# option -> (default, coerce)
NUMBERS = {
    "connect-timeout": (5.0, _number("connect-timeout")),
    "response-timeout": (10.0, _number("response-timeout")),
    "body-timeout": (30.0, _number("body-timeout")),
    "header-timeout": (_LIMITS.header_timeout, _number("header-timeout")),
    "client-body-timeout": (_LIMITS.body_timeout, _number("client-body-timeout")),
    "max-body": (_LIMITS.max_body, _number("max-body", True)),
    "max-headers": (_LIMITS.max_headers, _number("max-headers", True)),
    "max-header-bytes": (_LIMITS.max_header_bytes, _number("max-header-bytes", True)),
    "max-connections-per-client": (_LIMITS.max_connections_per_client,
                                   _number("max-connections-per-client", True)),
    "keepalive-timeout": (_LIMITS.keepalive_timeout, _number("keepalive-timeout")),
    "send-timeout": (_LIMITS.send_timeout, _number("send-timeout")),
    "drain-timeout": (_LIMITS.drain_timeout, _number("drain-timeout", minimum=-1)),
}
HELP = {
    "connect-timeout": "Upstream connect deadline, seconds.",
    "response-timeout": "Deadline for upstream response headers, seconds.",
    "body-timeout": "Deadline for a whole upstream response body, seconds.",
    "header-timeout": "Absolute deadline for a bot's request headers, seconds.",
    "client-body-timeout": "Absolute deadline for a bot's request body, seconds.",
    "max-body": "Largest request body accepted, bytes (413 beyond).",
    "max-headers": "Most request headers accepted (400 beyond).",
    "max-header-bytes": "Largest request line plus headers, bytes (400 beyond).",
    "max-connections-per-client": "Open connections allowed per client address.",
    "keepalive-timeout": "Idle keep-alive connections close after this, seconds.",
    "send-timeout": "A bot that stops reading is cut off after this, seconds.",
    "drain-timeout": "On SIGTERM, in-flight requests get this long to finish, seconds.",
}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("A Binance API proxy for trading bots: forwards every REST request "
                "untouched, answers market data from cache and streams, and keeps "
                "the fleet inside one weight budget. Precedence: command line > "
                "BNPROXY_* environment > --config file > defaults.")

    optFlags = [
        ["testnet", None, "Use Binance's testnet hosts for every market."],
        ["simulated-exchange", None,
         "Start an in-process fake exchange and use it as every market's upstream."],
    ]
    optParameters = [
        ["config", "c", None, "A TOML configuration file (see bnproxy.example.toml)."],
        ["port", "p", None, "Where to listen: digits (tcp:N) or an endpoint string. "
                            "Default 8080."],
        ["forwarded-header", None, "x-forwarded-for",
         "Header read from trusted proxies: x-forwarded-for or forwarded."],
        ["state-dir", None, ".", "Directory for state files (the ban state)."],
        ["log-format", None, "text", "Access log lines: text or json."],
    ] + [[name, None, default, HELP[name], coerce] for name, (default, coerce) in NUMBERS.items()]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["upstreams"] = {}
        self["stream_upstreams"] = {}
        self["middleware"] = []
        self["trusted_proxies"] = []
        self["admin_allow"] = []
        self.given: set[str] = set()
        for name, handler in list(self._dispatch.items()):
            self._dispatch[name] = self._recording(name, handler)

    def _recording(self, name, handler):
        """Wrap a dispatch entry to remember that the option was given (so an
        explicit default still beats the environment and the file)."""
        def record(option, value):
            self.given.add(name)
            if isinstance(handler, usage.CoerceParameter):
                return handler.dispatch(option, value)
            return handler(option, value)
        return record

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
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format must be text or json")
        if self["forwarded-header"] not in ("x-forwarded-for", "forwarded"):
            raise usage.UsageError("--forwarded-header must be x-forwarded-for or forwarded")

    def parseOptions(self, options=None) -> None:  # noqa: N802
        """As usage.Options, but a bad option or value exits with one line
        (twistd would print its whole usage text first)."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"twistd bnproxy: error: {e} (see --help)") from None

    def config(self, environ: Mapping[str, str] | None = None) -> ProxyConfig:
        """The configuration from this command line, the environment and the
        file. Raises ConfigError naming the key and the reason."""
        return resolve(self, os.environ if environ is None else environ)


# Option keys as dispatch names (what ``given`` records) -> value keys.
_GIVEN_KEY = {"upstream": "upstreams", "stream-upstream": "stream_upstreams",
              "trusted-proxy": "trusted_proxies", "admin-allow": "admin_allow"}


def _env_options(environ: Mapping[str, str]) -> Options:
    env = Options()
    try:
        usage.Options.parseOptions(env, args_from_env(environ))
    except usage.UsageError as e:
        raise ConfigError(f"environment: {e}") from None
    return env


def resolve(cli: Options, environ: Mapping[str, str]) -> ProxyConfig:
    env = _env_options(environ)
    path = cli["config"] if "config" in cli.given else env["config"] if "config" in env.given \
        else None
    file = configfile.load(path) if path else {}
    cli_given = {_GIVEN_KEY.get(n, n) for n in cli.given}
    env_given = {_GIVEN_KEY.get(n, n) for n in env.given}

    def pick(key: str, default: Any) -> Any:
        if key in cli_given:
            return cli[key]
        if key in env_given:
            return env[key]
        return file.get(key, default)

    def checked(key: str, coerce) -> Any:
        value = pick(key, NUMBERS[key][0])
        try:
            return coerce(value)
        except ValueError as e:
            source = "command line" if key in cli_given else (
                "environment" if key in env_given else f"config {path}")
            raise ConfigError(f"{source}: {e}") from None

    listen = []
    port = pick("port", None)
    if port is not None:
        listen.append(endpoint_description(str(port)))
    listen += [endpoint_description(x) for x in pick("listen", [])]
    listen = listen or ["tcp:8080"]
    _check_endpoints(listen)

    upstreams, streams = {}, {}
    for key, target, schemes in (("upstreams", upstreams, ("http", "https")),
                                 ("stream_upstreams", streams, ("ws", "wss"))):
        for market, url in pick(key, {}).items():
            try:
                target[market] = check_base_url(url, schemes)
            except ValueError as e:
                raise ConfigError(f"{key.replace('_', ' ')}.{market}: {e}") from None

    simulated = bool(pick("simulated-exchange", False))
    testnet = bool(pick("testnet", False))
    if simulated and (upstreams or testnet):
        raise ConfigError("--simulated-exchange replaces --upstream and --testnet")

    settings = file.get("middleware_settings", {})
    if "middleware" in cli_given or "middleware" in env_given:
        specs = pick("middleware", [])
    else:
        specs = [(name, {}) for name in file.get("chain", DEFAULT_CHAIN)]
    chain = tuple((name, {**settings.get(name, {}), **inline}) for name, inline in specs)
    unused = set(settings) - {name for name, _ in chain}
    if unused:
        raise ConfigError(f"config {path}: [middleware.{sorted(unused)[0]}] is not in the "
                          "chain")

    for key, allowed in (("log-format", ("text", "json")),
                         ("forwarded-header", ("x-forwarded-for", "forwarded"))):
        if pick(key, allowed[0]) not in allowed:
            raise ConfigError(f"{key}: expected one of {', '.join(allowed)}")

    limits = ServerLimits(**{
        attr: checked(option, NUMBERS[option][1]) for attr, option in (
            ("header_timeout", "header-timeout"), ("body_timeout", "client-body-timeout"),
            ("max_body", "max-body"), ("max_headers", "max-headers"),
            ("max_header_bytes", "max-header-bytes"),
            ("max_connections_per_client", "max-connections-per-client"),
            ("keepalive_timeout", "keepalive-timeout"), ("send_timeout", "send-timeout"),
            ("drain_timeout", "drain-timeout"))})
    return ProxyConfig(
        listen=tuple(listen), testnet=testnet, upstreams=upstreams, stream_upstreams=streams,
        middleware=chain,
        trusted_proxies=tuple(pick("trusted_proxies", [])),
        forwarded_header=pick("forwarded-header", "x-forwarded-for"),
        admin_allow=tuple(pick("admin_allow", [])) or ProxyConfig().admin_allow,
        connect_timeout=checked("connect-timeout", NUMBERS["connect-timeout"][1]),
        response_timeout=checked("response-timeout", NUMBERS["response-timeout"][1]),
        body_timeout=checked("body-timeout", NUMBERS["body-timeout"][1]),
        state_dir=str(pick("state-dir", ".")), log_format=pick("log-format", "text"),
        simulated_exchange=simulated, server=limits)


def _check_endpoints(listen: list[str]) -> None:
    from twisted.internet import reactor  # the entry point may touch it
    from twisted.internet.endpoints import serverFromString

    for description in listen:
        try:
            serverFromString(reactor, description)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ConfigError(f"bad listen endpoint {description!r}: {e}") from None


def makeService(options: Options):  # noqa: N802
    import gc

    from twisted.internet import reactor

    from bnproxy.service import ProxyService

    try:
        config = options.config()
        if config.simulated_exchange:
            from bnproxy.testing.simulated import with_simulated_exchange

            service = with_simulated_exchange(reactor, config, ProxyService)
        else:
            service = ProxyService(reactor, config)
    except ConfigError as e:
        sys.exit(f"twistd bnproxy: error: {e}")
    from bnproxy.server.accesslog import reopen_on_sigusr1
    from bnproxy.server.oplog import install_operational_log, twistd_log_stream

    twistd_options = getattr(options, "parent", None)  # None: built by bnproxy.tac
    if twistd_options is not None:
        stream = twistd_log_stream(twistd_options)  # None: --syslog, twistd keeps its own
    else:  # twistd -y's options are unknown here: keep its observer unless asked otherwise
        plain = config.log_format == "text" and config.log_level == "info"
        stream = None if plain else sys.stdout
    if stream is not None:
        try:
            install_operational_log(service, config.log_format, config.log_level, stream)
        except ValueError as e:  # a bad --log-level
            sys.exit(f"twistd bnproxy: error: {e}")
    reopen_on_sigusr1(reactor, service.access_log, stream if hasattr(stream, "reopen") else None)
    # Everything built so far lives as long as the process: keep the cyclic
    # collector from rescanning it (it showed as multi-millisecond p99 pauses).
    gc.freeze()
    return service


ENV_OPTIONS = {
    # variable: (option, repeatable)
    "BNPROXY_CONFIG": ("--config", False),
    "BNPROXY_PORT": ("--port", False),
    "BNPROXY_LISTEN": ("--listen", True),
    "BNPROXY_UPSTREAM": ("--upstream", True),
    "BNPROXY_STREAM_UPSTREAM": ("--stream-upstream", True),
    "BNPROXY_MIDDLEWARE": ("--middleware", True),
    "BNPROXY_TRUSTED_PROXY": ("--trusted-proxy", True),
    "BNPROXY_ADMIN_ALLOW": ("--admin-allow", True),
    "BNPROXY_FORWARDED_HEADER": ("--forwarded-header", False),
    "BNPROXY_STATE_DIR": ("--state-dir", False),
    "BNPROXY_LOG_FORMAT": ("--log-format", False),
    **{f"BNPROXY_{name.upper().replace('-', '_')}": (f"--{name}", False) for name in NUMBERS},
}
ENV_FLAGS = {"BNPROXY_TESTNET": "--testnet", "BNPROXY_SIMULATED_EXCHANGE": "--simulated-exchange"}


def args_from_env(environ: Mapping[str, str]) -> list[str]:
    """Command-line arguments from ``BNPROXY_*`` variables. Repeatable options
    take several values separated by spaces (``BNPROXY_UPSTREAM="spot=URL
    usdm=URL"``); flags take 1/true/yes/on (0/false/no/off/empty: off)."""
    args: list[str] = []
    for var, (option, repeatable) in ENV_OPTIONS.items():
        value = environ.get(var, "").strip()
        if not value:
            continue
        for item in value.split() if repeatable else [value]:
            args += [option, item]
    for var, flag in ENV_FLAGS.items():
        value = environ.get(var, "").strip().lower()
        if value in ("1", "true", "yes", "on"):
            args.append(flag)
        elif value not in ("", "0", "false", "no", "off"):
            raise ConfigError(f"{var}: expected 1/true/yes/on or 0/false/no/off, got {value!r}")
    return args
