"""What is wrong with a thread-store file, in one line a user can act on.

`check_location` looks before SQLite opens anything (a directory, a device, a read-only file,
a parent that is a file); `unusable` turns a SQLite failure while opening into the same kind
of line; `is_busy` tells a lock held by another connection from every other failure.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from exai_mcp.errors import StoreUnusable


def check_location(path: str | Path) -> Path:
    """Raise StoreUnusable if `path` cannot hold the thread store; creates nothing.

    Catches what SQLite reports badly or not at all: a directory or a device at the path, a
    parent that is a file, and a file or directory it may not write (a read-only mount is
    refused even for root). Returns the path with `~` expanded.
    """
    target = Path(path).expanduser()
    shown = str(target)
    try:
        if target.exists():
            if target.is_dir():
                raise StoreUnusable(
                    shown,
                    "is a directory",
                    f"point EXAI_STATE_DB at a file, e.g. {target / 'threads.sqlite3'}",
                )
            if not target.is_file():
                raise StoreUnusable(
                    shown,
                    f"is not a regular file ({_file_kind(target)})",
                    "point EXAI_STATE_DB at a regular file (it is created if missing)",
                )
            if not os.access(target, os.R_OK | os.W_OK):
                raise StoreUnusable(
                    shown,
                    "is read-only (no permission to write it, or a read-only file system)",
                    "make it writable, or point EXAI_STATE_DB at a writable file",
                )
            if not os.access(target.parent, os.W_OK | os.X_OK):
                raise StoreUnusable(
                    shown,
                    f"its directory {target.parent} is read-only, and SQLite keeps "
                    f"{target.name}-wal and {target.name}-shm beside it",
                    "make the directory writable, or point EXAI_STATE_DB at a file in a "
                    "writable directory",
                )
            return target
        ancestor = target.parent
        while not ancestor.exists() and ancestor != ancestor.parent:  # bounded by the depth
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise StoreUnusable(
                shown,
                f"{ancestor} is a file, not a directory, so the store cannot be created there",
                "point EXAI_STATE_DB at a path whose directories exist or can be created",
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise StoreUnusable(
                shown,
                f"cannot be created: {ancestor} is read-only",
                "point EXAI_STATE_DB at a file in a writable directory",
            )
    except OSError as exc:
        raise StoreUnusable(
            shown,
            f"cannot be checked ({exc.strerror or exc})",
            "point EXAI_STATE_DB at a file in a directory you can read and write",
        ) from exc
    return target


def _file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    for test, kind in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a file"


_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


def is_busy(exc: sqlite3.Error) -> bool:
    """The lock was held by another connection for longer than the busy timeout."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


# Primary SQLite result code: (what it means for the store, what to do about it).
_OPEN_FAILURES: dict[int, tuple[str, str]] = {
    sqlite3.SQLITE_BUSY: (
        "locked by another process",
        "close the program holding it, or point EXAI_STATE_DB at another file",
    ),
    sqlite3.SQLITE_NOTADB: (
        "not a SQLite database",
        "point EXAI_STATE_DB at another file or delete this one",
    ),
    sqlite3.SQLITE_CORRUPT: (
        "a damaged SQLite database",
        "move it aside (the threads in it are lost) or point EXAI_STATE_DB at another file",
    ),
    sqlite3.SQLITE_READONLY: (
        "read-only",
        "make it and its directory writable, or point EXAI_STATE_DB at a writable file",
    ),
    sqlite3.SQLITE_CANTOPEN: (
        "cannot be opened",
        "check that it and its directory are readable and writable, or point EXAI_STATE_DB "
        "at another file",
    ),
    sqlite3.SQLITE_IOERR: (
        "cannot be read or written (I/O error)",
        "put it on a local file system, or point EXAI_STATE_DB at another file",
    ),
    sqlite3.SQLITE_FULL: (
        "cannot grow: the disk is full",
        "free some space, or point EXAI_STATE_DB at a file on another disk",
    ),
    sqlite3.SQLITE_PERM: (
        "access denied",
        "make it writable, or point EXAI_STATE_DB at another file",
    ),
}


def unusable(path: str, exc: sqlite3.Error) -> StoreUnusable:
    """The one-line start-up error for a SQLite failure while opening the store."""
    code = getattr(exc, "sqlite_errorcode", None)
    reason, advice = _OPEN_FAILURES.get(
        -1 if code is None else code & 0xFF,
        ("cannot be used as the thread store", "point EXAI_STATE_DB at another file"),
    )
    return StoreUnusable(path, f"{reason} ({exc})", advice)
