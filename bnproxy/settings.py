"""Reading settings for the proxy and its middlewares, with errors that name
the key and the reason: the vocabulary ``bnproxy.config`` (the proxy's
settings) and ``bnproxy.chain`` (each middleware's) share, kept outside both
so that neither imports the other. ``bnproxy.config.reader`` re-exports it."""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration error; start-up stops and shows this message."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsReader:
    """Typed access to one settings mapping. Values may be TOML-typed or
    strings from the command line. Call :meth:`done` last: keys that were
    never read are refused as unknown."""

    def __init__(self, section: builtins.str, settings: Mapping[builtins.str, Any]) -> None:
        self.section = section
        self._settings = dict(settings)
        self._read: set[builtins.str] = set()

    def _raw(self, key: builtins.str, default: Any) -> Any:
        self._read.add(key)
        return self._settings.get(key, default)

    def _fail(self, key: builtins.str, reason: builtins.str) -> ConfigError:
        return ConfigError(f"{self.section}.{key}: {reason}")

    def str(self, key: builtins.str, default: builtins.str | None) -> builtins.str | None:
        value = self._raw(key, default)
        return None if value is None else str(value)

    def bool(self, key: builtins.str, default: bool) -> bool:
        value = self._raw(key, default)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._fail(key, f"expected true or false, got {value!r}")

    def float(self, key: builtins.str, default: float, minimum: float | None = None,
              maximum: float | None = None) -> float:
        value = self._raw(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self._fail(key, f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise self._fail(key, f"expected a finite number, got {value!r}")
        if minimum is not None and number < minimum:
            raise self._fail(key, f"must be at least {minimum}, got {value!r}")
        if maximum is not None and number > maximum:
            raise self._fail(key, f"must be at most {maximum}, got {value!r}")
        return number

    def int(self, key: builtins.str, default: int, minimum: int | None = None,
            maximum: int | None = None) -> int:
        value = self._raw(key, default)
        if isinstance(value, bool):
            raise self._fail(key, f"expected a whole number, got {value!r}")
        try:
            number = int(str(value).replace("_", ""))
        except (TypeError, ValueError):
            raise self._fail(key, f"expected a whole number, got {value!r}") from None
        if minimum is not None and number < minimum:
            raise self._fail(key, f"must be at least {minimum}, got {value!r}")
        if maximum is not None and number > maximum:
            raise self._fail(key, f"must be at most {maximum}, got {value!r}")
        return number

    def list(self, key: builtins.str, default: list[builtins.str]) -> list[builtins.str]:
        """A list: a TOML array, or a string separated by spaces or ``|``."""
        value = self._raw(key, default)
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
        return [v for v in str(value).replace("|", " ").split() if v]

    def mapping(self, key: builtins.str) -> dict[builtins.str, Any]:
        """A sub-table; from the command line, keys ``key.sub=value``."""
        self._read.add(key)
        value = self._settings.get(key, {})
        out = dict(value) if isinstance(value, Mapping) else {}
        prefix = key + "."
        for k, v in self._settings.items():
            if k.startswith(prefix):
                self._read.add(k)
                out[k[len(prefix):]] = v
        return out

    def done(self) -> None:
        unknown = sorted(set(self._settings) - self._read)
        if unknown:
            raise ConfigError(f"{self.section}: unknown setting(s) {', '.join(unknown)}")


def parse_middleware_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME[:key=value,key=value]`` → (name, settings); ``-NAME`` (a
    removal from the chain) → (``-NAME``, {})."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name.lstrip("-"):
        raise ConfigError(f"--middleware {spec!r}: no middleware name")
    if name.startswith("-") and rest:
        raise ConfigError(f"--middleware {spec!r}: a removal takes no settings")
    settings: dict[str, str] = {}
    if rest:
        for item in rest.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--middleware {spec!r}: expected key=value, got {item!r}")
            settings[key.strip()] = value.strip()
    return name, settings
