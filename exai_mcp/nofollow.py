"""Opening a file so that no symbolic link swapped in after it was checked is ever followed.

    fd = open_without_links(given, resolved)   # FileAccessError if a link appeared on the way
    now = where_now(fd)                         # where the open file really is (Linux)

The resolved path is opened a component at a time from `/` with `openat` and `O_NOFOLLOW`
(directories with `O_PATH` on Linux, so directories one may only traverse still work). A
component that became a symlink since the check makes the open fail, and the file is refused
as changed, never read through the link.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from exai_mcp.errors import FileAccessError

PERMISSION_REASON = "cannot be read (permission denied)"
LINK_APPEARED = "a symbolic link appeared on its path"
REPLACED = "it was replaced"


def changed(how: str) -> str:
    return f"changed while it was being read ({how}); it was not read, try again once it stays put"


_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_PATH (Linux) opens a directory for lookups only, so execute-only directories still work.
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_PATH", 0) | _O_NOFOLLOW | _O_DIRECTORY | _O_CLOEXEC
# O_NONBLOCK: a fifo swapped in must not block the open; O_NOCTTY: nor may a tty become ours.
_FILE_FLAGS = (
    os.O_RDONLY
    | _O_NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | _O_CLOEXEC
)
_CAN_OPEN_WITHOUT_LINKS = bool(_O_NOFOLLOW and _O_DIRECTORY) and os.open in os.supports_dir_fd
_DELETED = " (deleted)"  # what /proc/self/fd adds to a name unlinked since it was opened


def _open_refusal(given: str, exc: OSError, parent: int, name: str) -> FileAccessError:
    """What a failed `openat` of `name` in `parent` means for the file `given`."""
    if exc.errno == errno.ENOTDIR:  # a link (or a file) where resolving saw a directory
        try:
            now_link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            now_link = False
        return FileAccessError(given, changed(LINK_APPEARED) if now_link else "does not exist")
    if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link (EMLINK on BSD)
        return FileAccessError(given, changed(LINK_APPEARED))
    if exc.errno == errno.ENOENT:
        return FileAccessError(given, "does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FileAccessError(given, PERMISSION_REASON)
    if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket, or a device with no driver
        return FileAccessError(given, "is not a regular file")
    return FileAccessError(given, f"cannot be read ({exc.strerror or exc})")


def open_without_links(given: str, resolved: Path) -> int:
    """A descriptor for `resolved`, opened a component at a time from `/`, following no link.

    `resolved` holds no symlink when this is called, so a component that is one now was
    swapped in since: the open fails with ELOOP or ENOTDIR and the file is refused as changed,
    never read through the link.
    """
    if not _CAN_OPEN_WITHOUT_LINKS:
        raise FileAccessError(
            given,
            "cannot be read on this platform: it lacks openat with O_NOFOLLOW, which file "
            "access needs so that no symbolic link swapped in after the check is followed",
        )
    if not resolved.name:
        raise FileAccessError(given, "is not a regular file")
    parent = os.open(resolved.anchor, _DIR_FLAGS)
    try:
        for part in resolved.parts[1:-1]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise _open_refusal(given, exc, parent, part) from None
            os.close(parent)
            parent = child
        try:
            return os.open(resolved.name, _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise _open_refusal(given, exc, parent, resolved.name) from None
    finally:
        os.close(parent)


def where_now(fd: int) -> Path | None:
    """Where the open file `fd` is now, as the kernel names it (Linux); None if it cannot say.

    A file unlinked or replaced since it was opened is named by its path at that time.
    """
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return Path(where.removesuffix(_DELETED))
