"""Where settings come from: the command line, ``BNPROXY_*`` variables and
the TOML file, resolved in that precedence above the defaults.

Each source is checked against :mod:`bnproxy.config.schema` on its own, so an
error names the source, the key and the reason, in one line.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from bnproxy.config.model import ProxyConfig, ServerLimits
from bnproxy.config.reader import ConfigError, parse_middleware_spec
from bnproxy.config.schema import (
    BY_ENV,
    BY_NAME,
    BY_TOML,
    DEFAULT_LISTEN,
    FILE_KEYS,
    SETTINGS,
    Setting,
    SettingError,
    tables,
)

ENV_PREFIX = "BNPROXY_"
# Kubernetes injects these for a Service named "bnproxy" (service links):
# BNPROXY_SERVICE_HOST, BNPROXY_SERVICE_PORT[_NAME], BNPROXY_PORT_8080_TCP[_ADDR…]
# and BNPROXY_PORT=tcp://10.0.0.1:8080. They are not settings: skip them.
_SERVICE_LINK = re.compile(r"BNPROXY_(SERVICE_(HOST|PORT(_\w+)?)|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)")
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://")
# Set by a --workers parent for its workers (bnproxy.server.workers), not settings.
WORKER_VARIABLES = ("BNPROXY_WORKER_FD", "BNPROXY_WORKER")
SYMBOLS_FILE = "bnproxy-symbols.json"  # in --state-dir: [middleware.streams] symbols_file
KLINES_FILE = "bnproxy-klines.json"  # in --state-dir: [middleware.streams] klines_file


def coerce(setting: Setting, value: Any, source: str, key: str) -> Any:
    """``value`` as the model wants it, or ConfigError naming source and key."""
    try:
        return setting.coerce(value)
    except SettingError as e:
        reason = str(e)
        if key == f"--{setting.name}":
            raise ConfigError(f"{source}: {key} {reason}") from None
        if reason.startswith(("expects", "must")):  # reads as a sentence about the option
            reason = f"--{setting.name} {reason}"
        raise ConfigError(f"{source}: {key}: {reason}") from None


# -- the environment ---------------------------------------------------------------------------

def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings given as ``BNPROXY_*`` variables. An unknown ``BNPROXY_``
    variable is refused like an unknown option, naming the closest known one;
    repeatable settings take space-separated values; an empty variable is
    unset."""
    out: dict[str, Any] = {}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var in WORKER_VARIABLES or \
                _SERVICE_LINK.fullmatch(var) or (
                var == "BNPROXY_PORT" and _SERVICE_LINK_VALUE.match(raw)):
            continue
        setting = BY_ENV.get(var)
        if setting is None:
            close = difflib.get_close_matches(var, list(BY_ENV), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else \
                " (see 'twistd bnproxy --help' for the settings)"
            raise ConfigError(f"environment: unknown variable {var}{hint}")
        value = raw.strip()
        if not value and not setting.flag:
            continue
        if setting.name == "middleware":
            out["middleware"] = [parse_middleware_spec(v) for v in value.split()]
            continue
        out[setting.name] = coerce(setting, value, "environment", var)
    return out


# -- the file ----------------------------------------------------------------------------------

@attrs.frozen
class FileSettings:
    values: dict[str, Any]
    middleware: dict[str, dict[str, Any]]


def load(path: str) -> FileSettings:
    """Read and check the TOML file at ``path``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: not valid TOML: {e}") from None
    return parse(data, path)


def _toml_type_ok(setting: Setting, value: Any) -> str | None:
    """TOML values are typed: a number must be a number, a flag a boolean."""
    default = setting.default
    if setting.flag:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
    if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"expected a number, got {value!r}"
    return None


def parse(data: Mapping[str, Any], path: str = "config") -> FileSettings:
    source = f"config {path}"
    values: dict[str, Any] = {}
    middleware: dict[str, dict[str, Any]] = {}

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {reason}")

    def setting_value(key: str, value: Any) -> None:
        setting = BY_TOML[key]
        problem = _toml_type_ok(setting, value)
        if problem:
            raise fail(key, problem)
        if isinstance(value, Mapping) and setting.repeatable:  # a MARKET = URL table
            for sub, item in value.items():
                try:
                    setting.coerce({sub: item})
                except SettingError as e:
                    raise fail(f"{key}.{sub}", str(e).removeprefix(f"{sub}: ")) from None
        values[setting.name] = coerce(setting, value, source, key)

    table_names = set(tables())
    for key, value in data.items():
        if key in BY_TOML:
            setting_value(key, value)
        elif key in table_names:
            if not isinstance(value, Mapping):
                raise fail(key, "expected a table")
            for sub, v in value.items():
                if f"{key}.{sub}" not in BY_TOML:
                    raise fail(f"{key}.{sub}", "unknown setting")
                setting_value(f"{key}.{sub}", v)
        elif key == "middleware":
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping)
                                                         for v in value.values()):
                raise fail(key, "expected [middleware.NAME] tables")
            middleware = {name: dict(t) for name, t in value.items()}
        else:
            close = difflib.get_close_matches(
                key, [*[k.split(".")[0] for k in BY_TOML], *FILE_KEYS], n=1, cutoff=0.75)
            raise fail(key, "unknown setting" + (f" (did you mean {close[0]}?)" if close else ""))
    return FileSettings(values, middleware)


#: What endpoint parsing is given instead of a reactor (never called).
_NOT_A_REACTOR: Any = object()


# -- resolving ---------------------------------------------------------------------------------

def resolve(cli: Mapping[str, Any], environ: Mapping[str, str]) -> ProxyConfig:
    """The configuration from the command line's given values (already
    checked), the environment and the file; precedence in that order."""
    env = from_environment(environ)
    path = cli.get("config") or env.get("config")
    file = load(path) if path else FileSettings({}, {})

    def pick(name: str) -> Any:
        for given in (cli, env, file.values):
            if name in given:
                return given[name]
        return BY_NAME[name].default

    listen = [*((pick("port"),) if any("port" in g for g in (cli, env, file.values)) else ()),
              *pick("listen")] or list(DEFAULT_LISTEN)
    _check_endpoints(listen)

    simulated, testnet, upstreams = pick("simulated-exchange"), pick("testnet"), pick("upstream")
    if simulated and (upstreams or testnet):
        raise ConfigError("--simulated-exchange replaces --upstream and --testnet")

    specs = [parse_middleware_spec(spec) for spec in pick("middleware-chain")]
    edits = cli["middleware"] if "middleware" in cli else env.get("middleware", ())
    specs = edit_chain(specs, edits)
    chain = tuple((name, {**file.middleware.get(name, {}), **inline}) for name, inline in specs)
    if pick("discard-ban-state"):  # a shortcut for the governor's own setting
        chain = tuple((name, {**settings, "discard_ban_state": True} if name == "ratelimit"
                       else settings) for name, settings in chain)
    if not simulated:  # the streams keep their symbol lists beside the ban state
        # (the offline demo's exchange is new at each start: nothing kept)
        kept = os.path.join(pick("state-dir"), SYMBOLS_FILE)
        klines = os.path.join(pick("state-dir"), KLINES_FILE)
        chain = tuple((name, {"symbols_file": kept, "klines_file": klines, **settings}
                       if name == "streams"
                       else settings) for name, settings in chain)
    removed = {name[1:] for name, _ in edits if name.startswith("-")}  # tables kept, unused
    unused = set(file.middleware) - {name for name, _ in chain} - removed
    if unused:
        raise ConfigError(f"config {path}: [middleware.{sorted(unused)[0]}] is not in the "
                          "chain")

    top: dict[str, Any] = {}
    server: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.attr is None:
            continue
        value = pick(setting.name)
        if setting.attr.startswith("server."):
            server[setting.attr.removeprefix("server.")] = value
        else:
            top[setting.attr] = value
    return ProxyConfig(listen=tuple(listen), middleware=chain, server=ServerLimits(**server),
                       **top)


# Where --middleware adds a middleware the chain does not have: after these
# (so it sees only admitted requests, and every answer the chain makes).
_ADD_AFTER = ("logger", "allowlist")


def edit_chain(chain: list[tuple[str, dict[str, Any]]],
               edits: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The chain after ``--middleware`` edits, in order: ``-NAME`` removes
    NAME; ``NAME[:settings]`` sets the settings of a middleware in the chain,
    or adds it after the logger and the allowlist (the allowlist and the rate
    limiter stay unless removed by name, or the whole chain is given with
    ``--middleware-chain``)."""
    out = [(name, dict(settings)) for name, settings in chain]
    at = max((i + 1 for i, (name, _) in enumerate(out) if name in _ADD_AFTER), default=0)
    for name, settings in edits:
        names = [n for n, _ in out]
        if name.startswith("-"):
            if name[1:] not in names:
                raise ConfigError(f"--middleware {name}: {name[1:]!r} is not in the chain "
                                  f"({' '.join(names) or 'empty'})")
            i = names.index(name[1:])
            del out[i]
            at -= i < at
        elif name in names:
            out[names.index(name)][1].update(settings)
        else:
            out.insert(at, (name, dict(settings)))
            at += 1
    return out


def _check_endpoints(listen: list[str]) -> None:
    """Each endpoint string parses. Parsing only stores the reactor (nothing
    listens yet), so none is given: reading the configuration must not
    install the global reactor."""
    from twisted.internet.endpoints import serverFromString

    for description in listen:
        try:
            serverFromString(_NOT_A_REACTOR, description)
        except (ValueError, KeyError, IndexError, TypeError, OSError) as e:
            raise ConfigError(f"bad listen endpoint {description!r}: {e}") from None
