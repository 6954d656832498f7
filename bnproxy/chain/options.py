"""Typed middleware settings: a factory declares its ``options``, the
registry checks a ``[middleware.NAME]`` table (or ``--middleware
NAME:key=value``) against them before ``build`` and hands ``build`` a plain
dict holding every option (given, or its default). ``--help-middleware NAME``
and the example configuration file are made from the same declarations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from bnproxy.settings import ConfigError, SettingsReader

__all__ = ["ConfigError", "Option", "SettingsReader", "describe", "read_options"]

KINDS = ("int", "float", "bool", "str", "list", "table")


@attrs.frozen
class Option:
    """One middleware setting.

    ``kind``: ``int``, ``float``, ``bool``, ``str`` (None allowed as a
    default: unset), ``list`` (of strings; a TOML array, or space-separated on
    the command line) or ``table`` (``[middleware.NAME.OPTION]``, values of
    kind ``item``, keys limited to ``keys`` when given; on the command line
    ``OPTION.KEY=value``). ``minimum``/``maximum`` bound numbers (and table
    values); ``choices`` bound strings. ``shown`` False: the example file
    shows the option commented out (its default is worked out at start-up).
    """

    name: str
    kind: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    item: str = "float"
    keys: tuple[str, ...] | None = None
    shown: bool = True

    def __attrs_post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {', '.join(KINDS)}")

    def type_text(self) -> str:
        if self.kind == "table":
            keys = f" ({', '.join(self.keys)})" if self.keys else ""
            return f"table of {self.item}{keys}"
        if self.choices:
            return " | ".join(self.choices)
        return self.kind


def _read(reader: SettingsReader, key: str, kind: str, default: Any, option: Option) -> Any:
    if kind == "int":
        return reader.int(key, default, None if option.minimum is None else int(option.minimum),
                          None if option.maximum is None else int(option.maximum))
    if kind == "float":
        return reader.float(key, default, option.minimum, option.maximum)
    if kind == "bool":
        return reader.bool(key, default)
    if kind == "list":
        return reader.list(key, list(default))
    value = reader.str(key, default)
    if option.choices and value is not None and value not in option.choices:
        raise ConfigError(f"{reader.section}.{key}: expected one of "
                          f"{', '.join(option.choices)}, got {value!r}")
    return value


def read_options(section: str, options: Sequence[Option],
                 settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared option's value; unknown keys and bad values raise
    ConfigError naming ``section.key``."""
    reader = SettingsReader(section, settings)
    out: dict[str, Any] = {}
    for option in options:
        if option.kind != "table":
            out[option.name] = _read(reader, option.name, option.kind, option.default, option)
            continue
        table = dict(option.default or {})
        for key, value in reader.mapping(option.name).items():
            if option.keys is not None and key not in option.keys:
                raise ConfigError(f"{section}.{option.name}.{key}: unknown key (one of "
                                  f"{', '.join(option.keys)})")
            sub = SettingsReader(f"{section}.{option.name}", {key: value})
            table[key] = _read(sub, key, option.item, None, option)
        out[option.name] = table
    reader.done()
    return out


def describe(name: str, description: str, options: Sequence[Option] | None) -> str:
    """The text ``--help-middleware NAME`` prints."""
    lines = [f"{name}: {description}"]
    if options is None:
        lines.append("  (this middleware declares no typed options; see its documentation)")
        return "\n".join(lines)
    if not options:
        lines.append("  (no settings)")
    for option in options:
        default = option.default
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default)) or "(empty)"
        elif isinstance(default, Mapping):
            default = ", ".join(f"{k}={v}" for k, v in default.items()) or "(empty)"
        lines.append(f"  {option.name} ({option.type_text()}, default {default})")
        lines.append(f"      {option.help}")
    lines.append(f"Set in [middleware.{name}] of the config file or as "
                 f"--middleware {name}:key=value,...")
    return "\n".join(lines)
