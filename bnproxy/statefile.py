"""Files the proxy keeps in its state directory (bans, the streams' symbol
lists, the dashboard's history): written whole and atomically, read up to a
bound. Several processes may write the same file (``--workers``): each
writes its own temporary file, so a reader sees one writer's whole file."""

from __future__ import annotations

import os
import stat
import tempfile


def write_atomically(path: str, data: bytes) -> None:
    """``data`` as the whole of ``path``: written to a temporary file of its
    own in the same directory, flushed to disk, renamed over ``path``, the
    directory flushed. A crash leaves the old file or the new one. Raises
    ``OSError`` (nothing is left behind)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + "-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_bounded(path: str, limit: int) -> bytes | None:
    """The whole of regular file ``path`` (None when there is none). Raises
    ``ValueError`` for something else than a regular file or one over
    ``limit`` bytes, ``OSError`` when it cannot be read."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data
