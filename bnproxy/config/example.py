"""The annotated example configuration file, made from the schema and the
middlewares' declared options: ``python -m bnproxy.config.example >
bnproxy.example.toml``. A test keeps the shipped file equal to this output."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from bnproxy.config.schema import DEFAULT_CHAIN, SETTINGS, Setting

HEADER = """\
# bnproxy configuration: every setting, with its default.
# Use with: twistd -n bnproxy --config bnproxy.toml  (or BNPROXY_CONFIG=bnproxy.toml)
# Precedence: command line > BNPROXY_* environment variables > this file > defaults.
# Unknown keys and bad values stop start-up with one line naming the key.
# Made by `python -m bnproxy.config.example`: edit the schema, not this file.
"""

_COMMENTED = {"upstream", "stream_upstream"}  # empty by default: show the production hosts


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, 86)]


def _setting_lines(setting: Setting, key: str) -> list[str]:
    lines = _comment(f"{setting.help} (--{setting.name}, {setting.env})")
    default = setting.default
    lines.append(f"{key} = {toml_value(default)}")
    return lines


def _market_table(setting: Setting) -> list[str]:
    from bnproxy.binance.markets import PRODUCTION

    lines = [f"[{setting.toml}]", *_comment(f"{setting.help} (--{setting.name}, {setting.env})")]
    for name, market in PRODUCTION.items():
        url = market.rest_base if setting.toml == "upstream" else market.stream_base
        if url:
            lines.append(f"# {name} = {toml_value(url)}")
    return lines


def _option_lines(options: Sequence[Any], table: str) -> list[str]:
    lines: list[str] = []
    subtables: list[str] = []
    for option in options:
        if option.kind == "table":
            subtables += ["", f"[{table}.{option.name}]", *_comment(option.help)]
            subtables += [f"{k} = {toml_value(v)}" for k, v in dict(option.default).items()]
            continue
        lines += _comment(option.help)
        if option.default is None:
            lines.append(f"# {option.name} = ")
        elif not option.shown:
            lines.append(f"# {option.name} = {toml_value(option.default)}")
        else:
            lines.append(f"{option.name} = {toml_value(option.default)}")
    return lines + subtables


def render(factories: Mapping[str, Any] | None = None) -> str:
    if factories is None:
        from bnproxy.chain.registry import discover

        factories = discover()
    top: list[str] = [HEADER]
    tables: dict[str, list[str]] = {}
    for setting in SETTINGS:
        if setting.toml is None:
            continue
        if setting.toml in _COMMENTED:
            tables[setting.toml] = _market_table(setting)
        elif "." in setting.toml:
            table, key = setting.toml.split(".", 1)
            tables.setdefault(table, [f"[{table}]"]).extend(_setting_lines(setting, key))
        else:
            top += [*_setting_lines(setting, setting.toml), ""]
        if setting.toml == "chain":  # each middleware's settings: a table below
            top[-1:] = ["# Each middleware has a [middleware.NAME] table below "
                        "(`twistd bnproxy --help-middleware NAME`).", ""]
    body = [*top]
    for lines in tables.values():
        body += [*lines, ""]
    for name in DEFAULT_CHAIN:
        factory = factories[name]
        body += [f"[middleware.{name}]", *_comment(factory.description)]
        options = getattr(factory, "options", None)
        if options is None:
            body.append(f"# (see `twistd bnproxy --help-middleware {name}`)")
        else:
            body += _option_lines(options, f"middleware.{name}")
        body.append("")
    return "\n".join(body).rstrip("\n") + "\n"


def options_table() -> str:
    """README.md's options table (a test keeps the README's copy equal)."""
    rows = ["| Option | Environment | File key | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        option = f"`--{s.name}`" + (f", `-{s.short}`" if s.short else "") + \
            (f" {s.metavar}" if s.metavar else "")
        default = " ".join(s.default) if isinstance(s.default, tuple) else s.default
        shown = "" if default in (None, "", {}, False) else f" Default `{default}`."
        key = f"`{s.toml}`" if s.toml else "—"
        rows.append(f"| {option} | `{s.env}` | {key} | {s.help}{shown} |")
    rows.append("| `--help-middleware NAME` | — | — | A middleware's settings, with types and "
                "defaults; then exit. |")
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- options table -->\n", "<!-- end of options table -->\n"


def update_readme(path: str) -> None:
    """Rewrite the options table between the markers of README.md."""
    with open(path) as f:
        text = f.read()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    with open(path, "w") as f:
        f.write(head + BEGIN + options_table() + END + tail)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--readme"]:
        update_readme(sys.argv[2])
    else:
        sys.stdout.write(render())
