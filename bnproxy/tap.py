"""``twistd bnproxy``: command-line options and ``makeService``.

The options are generated from :mod:`bnproxy.config.schema`. Configuration
comes from four places, in this precedence: the command line, ``BNPROXY_*``
environment variables, the TOML file (``--config`` or ``BNPROXY_CONFIG``),
the defaults. Every mistake stops start-up with one line, before anything
listens.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from bnproxy.config import sources
from bnproxy.config.model import ProxyConfig
from bnproxy.config.reader import ConfigError, parse_middleware_spec
from bnproxy.config.schema import SETTINGS, Setting


def _help(setting: Setting) -> str:
    text = setting.help
    if setting.env:
        text += f" [env {setting.env}]"
    if setting.default not in (None, (), {}, False):
        default = setting.default
        if isinstance(default, tuple):
            default = " ".join(default)
        text += f" [default: {default}]"
    return text


def _collector(setting: Setting):
    def opt(self: Options, value: str) -> None:
        self.raw.setdefault(setting.name, []).append(value)
    opt.__doc__ = _help(setting)
    return opt


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("A Binance API proxy for trading bots: forwards every REST request "
                "untouched, answers market data from cache and streams, and keeps "
                "the fleet inside one weight budget. Precedence: command line > "
                "BNPROXY_* environment > --config file > defaults.")

    optFlags = [[s.name, s.short, _help(s)] for s in SETTINGS if s.flag]
    optParameters = [[s.name, s.short, None, _help(s)] for s in SETTINGS
                     if not s.flag and not s.repeatable]

    def __init__(self) -> None:
        super().__init__()
        self.raw: dict[str, list[str]] = {}
        self.given: dict[str, Any] = {}

    def opt_help_middleware(self, name: str) -> None:
        """NAME: list a middleware's settings and exit."""
        from bnproxy.chain.registry import describe_middleware

        try:
            print(describe_middleware(name))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        sys.exit(0)

    def postOptions(self) -> None:
        """Check every given value now: a mistake is one line, before anything
        else happens."""
        try:
            for setting in SETTINGS:
                key = f"--{setting.name}"
                if setting.name == "middleware":
                    if setting.name in self.raw:
                        self.given["middleware"] = [parse_middleware_spec(v)
                                                    for v in self.raw["middleware"]]
                elif setting.repeatable:
                    if setting.name in self.raw:
                        self.given[setting.name] = sources.coerce(
                            setting, self.raw[setting.name], "command line", key)
                elif setting.flag:
                    if self[setting.name]:
                        self.given[setting.name] = True
                elif self[setting.name] is not None:
                    self.given[setting.name] = sources.coerce(
                        setting, self[setting.name], "command line", key)
        except ConfigError as e:
            raise usage.UsageError(str(e).removeprefix("command line: ")) from None

    def parseOptions(self, options: list[str] | None = None) -> None:
        """As usage.Options, but a bad option or value exits with one line
        (twistd would print its whole usage text first)."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"twistd bnproxy: error: {e} (see --help)") from None

    def config(self, environ: Mapping[str, str] | None = None) -> ProxyConfig:
        """The configuration from this command line, the environment and the
        file. Raises ConfigError naming the source, the key and the reason."""
        return sources.resolve(self.given, os.environ if environ is None else environ)


for _setting in SETTINGS:
    if _setting.repeatable:
        setattr(Options, "opt_" + _setting.name.replace("-", "_"), _collector(_setting))


def makeService(options: Options):
    import gc

    from twisted.internet import reactor

    from bnproxy.app import build_service

    try:
        config = options.config()
        service = build_service(reactor, config)
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
