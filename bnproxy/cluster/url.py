"""``redis://[user:password@]HOST[:PORT][/DB]`` and ``rediss://`` (TLS).

The password is kept out of ``repr`` and of ``redacted()``, which is what
logs, ``/health`` and error messages show.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import attrs

DEFAULT_PORT = 6379


class RedisURLError(ValueError):
    """A shared-state URL that cannot be used (the message never contains
    the password)."""


@attrs.frozen
class RedisURL:
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False

    def redacted(self) -> str:
        """The URL with the password replaced by ``***``."""
        scheme = "rediss" if self.tls else "redis"
        cred = ""
        if self.username or self.password:
            cred = (self.username or "") + (":***" if self.password else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{cred}{host}:{self.port}/{self.db}"

    def __str__(self) -> str:
        return self.redacted()


def parse_redis_url(url: str) -> RedisURL:
    """Parse a shared-state URL; ``RedisURLError`` (without the password)
    when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise RedisURLError("the shared-state URL is malformed (expected "
                            "redis://[user:password@]HOST:PORT/DB)") from None
    if parts.scheme not in ("redis", "rediss"):
        raise RedisURLError(f"the shared-state URL must start with redis:// or rediss://, "
                            f"not {parts.scheme or '(nothing)'}://")
    if not parts.hostname:
        raise RedisURLError("the shared-state URL names no host")
    if parts.query or parts.fragment:
        raise RedisURLError("the shared-state URL takes no query or fragment")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise RedisURLError(f"the shared-state URL's database must be a number, not {path!r}")
    return RedisURL(
        host=parts.hostname, port=port or DEFAULT_PORT, db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "rediss")
