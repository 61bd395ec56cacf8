"""Which files a tool may read, and how they are shown to a model.

The `analyze` tool (its `files` argument) and the `workflow` tool (`relevant_files`) send file
contents to a third-party model, so every path goes through `FileAccessPolicy.check` first.

Allowed: an absolute path to an existing regular text file that, after resolving symlinks and
`..`, lies inside one of the allowed roots (EXAI_ALLOWED_ROOTS; by default the user's home and
the working directory, leaving out either that is a filesystem root) and is at most
EXAI_MAX_FILE_BYTES (1 MiB by default).

Refused, each with a reason naming the rule and what is allowed:

- every path, when there is no allowed root: the defaults leave none when both the home and
  the working directory are `/` (a container run as a user with no passwd entry), and the
  reason names EXAI_ALLOWED_ROOTS. Tool calls without files are not affected;
- a relative path (the server's working directory is not the assistant's);
- a path that does not exist, or is not a regular file (directory, device, fifo, socket);
- a path outside the allowed roots once symlinks and `..` are resolved, so a link inside a
  root cannot smuggle out a file from elsewhere;
- a secret location, because credentials must never leave the machine by accident. The rules
  are data, `secret_paths.gitignore`, matched by `exai_mcp.secret_rules` (which says how names
  are normalised, so `id_rsa.bak~`, `ID_RSA` and `server.pem ` count as their originals).
  They are matched against every spelling of the path: as given, as it reads after each
  symlink met while resolving it (at any depth of a chain of links), and resolved; so neither
  a secret directory reached through an innocently named link, nor an innocently named link
  to a secret, nor a secret name halfway along a chain of links gets through. They cover
  system credential files (`/etc/shadow`, `/etc/sudoers`, anything under `/proc`, `/sys`,
  `/run/secrets`), credential directories (`.ssh`, `.gnupg`, `.aws`, `.azure`, `.kube`,
  `.docker`, `.config/gcloud`, ...), `.env` files but not their templates, token and password
  files (`.netrc`, `.git-credentials`, `.vault-token`, `credentials`, `secrets.yaml`,
  `*.tfstate`, shell histories, ...), and private keys and key stores (`id_rsa*` but not
  `*.pub`, `*.pem`, `*.key`, `*.p12`, `*.jks`, `*.kdbx`, ...).
  The only override is a root that explicitly names the secret location: a root that is, or
  lies inside, the matched directory (e.g. EXAI_ALLOWED_ROOTS=~/.ssh) or, for a file rule, a
  root that is that very file (a location reached through a link counts as its target too).
  Every rule a path matches needs its own override, and a broad root such as the home
  directory or `/` never is one. All of this is decided from the path alone, before the file
  is opened;
- a file holding a secret whatever its name: a private key block, an AWS secret access key, a
  service-account `"private_key"`, an API token of a known shape (see `secret_content`), or
  one of the API keys this server was given, found in the first 8 KiB when
  checked and in the whole file when read. Only a root that is that very file overrides it;
- a file larger than the limit (checked again when it is read, since files grow);
- a file that cannot be read (permission denied);
- a binary file: a NUL byte in the first 8 KiB, or more than 30% of its bytes not valid UTF-8;
- a file that changed while it was being read: a symbolic link swapped in on its path after the
  path was checked, or a file moved out of the roots or to a secret location meanwhile (without
  `/proc`: a file replaced meanwhile).

Checked by its path, then read from one descriptor. The path checks above come first, for clear
reasons. The resolved path is then opened a component at a time from `/` with `openat` and
`O_NOFOLLOW` (directories `O_PATH` on Linux, so execute-only ones still work), so a link swapped
in after the check fails the open (ELOOP, ENOTDIR) and is never read through; a link inside a
root to a file inside a root still works, since the path opened is the resolved one. That
descriptor is checked again: `fstat` says a regular file within the limit, and where it really
is (`/proc/self/fd/N` on Linux) must lie inside a root and pass the location rules; without
`/proc` (macOS) its device and inode must still be those of the checked path. The content
sniffing and the text come from that same descriptor, and `embed` checks and reads each file
through one open. A platform without `openat` and `O_NOFOLLOW` refuses every file.

Text is decoded as UTF-8 with undecodable bytes replaced (U+FFFD), so odd encodings such as
Latin-1 never raise. Files are rendered with 1-based line numbers (see `number_lines`) between
BEGIN/END markers, and `FileAccessPolicy.embed` fits whole files into a token budget: a file
that does not fit, or fails its check, is listed with the reason in a note at the end of the
text, never silently dropped and never cut mid-file.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

from exai_mcp.errors import FileAccessError
from exai_mcp.nofollow import (
    PERMISSION_REASON,
    REPLACED,
    changed,
    open_without_links,
    where_now,
)
from exai_mcp.redact import MIN_RUN
from exai_mcp.secret_rules import SecretHit, secret_content, secret_hits

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "EmbeddedFiles",
    "FileAccessPolicy",
    "cut_to_tokens",
    "estimate_tokens",
    "number_lines",
    "render_file",
]

DEFAULT_MAX_FILE_BYTES = 1 << 20
"""1 MiB: the default for EXAI_MAX_FILE_BYTES."""

_SNIFF_BYTES = 8192
_BINARY_UNDECODABLE_RATIO = 0.30

_MAX_SYMLINK_HOPS = 40  # as Linux allows in one path lookup

_NOTE_HEADER = "--- NOTE: these files were NOT included ---"


# --------------------------------------------------------------------------- secret rules


def _spellings(path: Path) -> list[Path]:
    """Every spelling of the absolute `path` met while resolving it, the given one first.

    Each symlink on the way, at any depth, adds the path as it reads with that link replaced by
    its target. A component that is missing or cannot be read is taken as it is.
    """
    spellings = [path]
    done = Path(path.anchor)
    todo = list(path.parts[1:])
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            done = done.parent
            continue
        here = done / part
        try:
            target = Path(os.readlink(here))
        except OSError:  # not a link, or nothing there
            done = here
            continue
        hops += 1
        if hops > _MAX_SYMLINK_HOPS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", str(path))
        if target.is_absolute():
            done = Path(target.anchor)
        todo[:0] = target.parts[1:] if target.is_absolute() else target.parts
        spellings.append(done.joinpath(*todo))
    return spellings


def _named_by(hit: SecretHit, roots: Sequence[Path]) -> bool:
    """Whether a root names the hit's location explicitly: inside its directory, or the file."""
    places = (Path(hit.location), Path(os.path.realpath(hit.location)))
    if hit.is_dir:
        return any(root.is_relative_to(place) for root in roots for place in places)
    return any(root == place for root in roots for place in places)


def _secret_refusal(given: str, what: str) -> FileAccessError:
    return FileAccessError(
        given,
        f"{what} and is never sent to a model unless EXAI_ALLOWED_ROOTS names it explicitly",
    )


# --------------------------------------------------------------------------- rendering


def _split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them: split on \\n, a trailing \\r dropped, no phantom last."""
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def number_lines(text: str) -> str:
    """Prefix each line with its 1-based number, right-aligned, and a bar.

    Format: the number right-aligned in a column at least 5 wide (wider for files of 100,000+
    lines), then `│ ` and the line, e.g. `   12│ return x`. Empty lines get no trailing space.
    Lines split on `\\n` only (a `\\r\\n` ending is dropped), so numbers match an editor's.
    """
    lines = _split_lines(text)
    width = max(5, len(str(len(lines))))
    return "\n".join(
        f"{n:>{width}}│ {line}" if line else f"{n:>{width}}│" for n, line in enumerate(lines, 1)
    )


def estimate_tokens(text: str) -> int:
    """A cheap token estimate for budgets: UTF-8 bytes / 4, rounded up.

    Four bytes is about one token of English or code (one byte a character); a Chinese
    character takes three bytes and tokenisers give it most of a token, so counting
    characters would take Chinese text for a third of its size and send what cannot fit.
    """
    if text.isascii():
        return math.ceil(len(text) / 4)
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)


def cut_to_tokens(text: str, tokens: int) -> str:
    """The start of `text` that `estimate_tokens` puts at `tokens` at most."""
    if text.isascii():
        return text[: tokens * 4]
    return text.encode("utf-8", "surrogatepass")[: tokens * 4].decode("utf-8", "ignore")


def render_file(path: Path, text: str) -> str:
    """One file as a model sees it: BEGIN header with path and line count, numbered lines, END."""
    count = len(_split_lines(text))
    unit = "line" if count == 1 else "lines"
    body = number_lines(text)
    lines = [f"--- BEGIN FILE: {path} ({count} {unit}) ---"]
    if body:
        lines.append(body)
    lines.append(f"--- END FILE: {path} ---")
    return "\n".join(lines)


# --------------------------------------------------------------------------- policy


FileStamp = tuple[str, int, int]
"""(resolved path, size in bytes, mtime in ns): changes whenever the file is edited."""


@dataclass
class EmbeddedFiles:
    """The result of `FileAccessPolicy.embed`.

    `text` holds the rendered files (and, when anything was left out, a closing note);
    `included` lists the resolved paths embedded; `left_out` pairs each path, as the caller
    gave it, with the reason it is missing.
    """

    text: str
    included: list[str] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)


def _looks_binary(data: bytes, *, sniff_nul: bool = True) -> bool:
    """NUL in the first 8 KiB, or more than 30% of the bytes not valid UTF-8."""
    if not data:
        return False
    if sniff_nul and b"\x00" in data[:_SNIFF_BYTES]:
        return True
    decoded = data.decode("utf-8", errors="surrogateescape")
    bad = sum(1 for ch in decoded if "\udc80" <= ch <= "\udcff")
    return bad / len(data) > _BINARY_UNDECODABLE_RATIO


_BINARY_REASON = "looks like a binary file; only text files can be analysed"
_NO_ROOTS_REASON = (
    "no directory is allowed for file access: the home directory and the working directory "
    "are both the filesystem root (or the home is unknown), and then neither is a default "
    "root; set EXAI_ALLOWED_ROOTS to the directories tools may read"
)


def _read_from(given: str, handle: BinaryIO, size: int) -> bytes:
    try:
        return handle.read(size)
    except PermissionError:
        raise FileAccessError(given, PERMISSION_REASON) from None
    except OSError as exc:
        raise FileAccessError(given, f"cannot be read ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class FileAccessPolicy:
    """The allowed roots (already resolved) and the per-file size limit."""

    roots: tuple[Path, ...]
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    # (variable, value) of the API keys this server holds: a file holding one is refused
    # whatever the key's shape (client configs such as claude_desktop_config.json hold them).
    own_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    @classmethod
    def from_roots(
        cls,
        roots: Sequence[str | Path],
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        own_keys: Mapping[str, str] | None = None,
    ) -> FileAccessPolicy:
        """A policy from root paths as configured (`~` expanded, symlinks resolved)."""
        return cls(
            roots=tuple(Path(r).expanduser().resolve() for r in roots),
            max_file_bytes=max_file_bytes,
            own_keys=tuple(
                (variable, key.encode())
                for variable, key in (own_keys or {}).items()
                if len(key) >= MIN_RUN
            ),
        )

    # ---------------------------------------------------------------- path checks

    def _too_big(self, given: str, size: int) -> FileAccessError:
        return FileAccessError(
            given,
            f"is {size} bytes, over the EXAI_MAX_FILE_BYTES limit of {self.max_file_bytes} bytes",
        )

    def _roots_text(self) -> str:
        return ", ".join(str(r) for r in self.roots) or "none configured"

    def _containing(self, given: str, place: Path) -> list[Path]:
        """The roots `place` lies in; refused as outside the roots if none."""
        containing = [r for r in self.roots if place.is_relative_to(r)]
        if not containing:
            raise FileAccessError(
                given,
                f"is outside the allowed roots ({self._roots_text()}); "
                "set EXAI_ALLOWED_ROOTS to allow it",
            )
        return containing

    @staticmethod
    def _refuse_secret_location(
        given: str, spellings: Sequence[Path], containing: Sequence[Path]
    ) -> None:
        for spelled in spellings:
            for hit in secret_hits(spelled):
                if not _named_by(hit, containing):
                    raise _secret_refusal(given, f"is a secret location ({hit.rule})")

    def _check_path(self, given: str) -> Path:
        """The resolved path, if the path itself (every spelling of it) may be read."""
        if not self.roots:
            raise FileAccessError(given, _NO_ROOTS_REASON)
        if not given or not Path(given).is_absolute():
            raise FileAccessError(given, "must be an absolute path (got a relative one)")
        try:
            resolved = Path(given).resolve()
        except (OSError, RuntimeError, ValueError):
            raise FileAccessError(
                given, "cannot be resolved (a symlink loop or an invalid path)"
            ) from None
        containing = self._containing(given, resolved)
        try:
            spellings = [*_spellings(Path(given)), resolved]
        except (OSError, RuntimeError, ValueError):
            raise FileAccessError(
                given, "cannot be resolved (a symlink loop or an invalid path)"
            ) from None
        self._refuse_secret_location(given, spellings, containing)
        return resolved

    # ---------------------------------------------------------------- descriptor checks

    def _check_descriptor(self, given: str, resolved: Path, fd: int) -> os.stat_result:
        """What the open `fd` is: a regular file, within the limit, at an allowed place."""
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileAccessError(given, "is not a regular file")
        where = where_now(fd)
        if where is None:
            # No /proc (macOS): the file must still be the one at the checked path.
            try:
                now = os.stat(resolved, follow_symlinks=False)
            except OSError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                raise FileAccessError(given, changed(REPLACED))
        elif where != resolved:
            try:
                if not where.is_absolute():
                    raise FileAccessError(given, "is not a file on disk")
                self._refuse_secret_location(given, [where], self._containing(given, where))
            except FileAccessError as exc:
                raise FileAccessError(
                    given, f"changed while it was being read: it is now {where}, which {exc.reason}"
                ) from None
        if info.st_size > self.max_file_bytes:
            raise self._too_big(given, info.st_size)
        return info

    @staticmethod
    def _open(given: str, resolved: Path) -> int:
        """The one place a file is opened (tests replace it to prove a refusal came first)."""
        return open_without_links(given, resolved)

    @contextmanager
    def _opened(self, given: str) -> Iterator[tuple[Path, BinaryIO, os.stat_result]]:
        """The resolved path, its file open for reading, and its `fstat`; every check passed.

        The path is checked first, then opened once without following links, and the
        descriptor is checked; whatever is read from it is what was checked.
        """
        resolved = self._check_path(given)
        fd = self._open(given, resolved)
        try:
            info = self._check_descriptor(given, resolved, fd)
            handle = os.fdopen(fd, "rb")  # refuses a directory, so only after the checks
        except BaseException:
            os.close(fd)
            raise
        with handle:
            yield resolved, handle, info

    # ---------------------------------------------------------------- content checks

    def _refuse_content(self, given: str, resolved: Path, data: bytes) -> None:
        """Refuse `data` holding a secret (unless a root is exactly this file) or binary."""
        found = secret_content(data) or next(
            (f"the value of {variable}" for variable, key in self.own_keys if key in data), None
        )
        if found is not None and resolved not in self.roots:
            raise _secret_refusal(given, f"holds a secret ({found})")
        if _looks_binary(data):
            raise FileAccessError(given, _BINARY_REASON)

    def _read_whole(self, given: str, handle: BinaryIO) -> bytes:
        """The whole file, refused if it grew past the limit since it was checked."""
        data = _read_from(given, handle, self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise self._too_big(given, max(os.fstat(handle.fileno()).st_size, len(data)))
        return data

    def _inspect(self, given: str) -> tuple[Path, os.stat_result]:
        with self._opened(given) as (resolved, handle, info):
            sample = _read_from(given, handle, _SNIFF_BYTES)
        # The sample may end mid-character; that costs at most 3 bytes of the 30% allowance.
        self._refuse_content(given, resolved, sample)
        return resolved, info

    def check(self, path: str) -> Path:
        """The resolved path if a tool may read it; otherwise `FileAccessError` naming the rule.

        Cheap: resolve, a `readlink` per path component, an `open` per component (following
        no link), an `fstat` and an 8 KiB read (for secret and binary sniffing). Secret
        locations are refused before the file is opened.
        """
        return self._inspect(str(path))[0]

    def read_text(self, path: Path) -> str:
        """The file's text (UTF-8, undecodable bytes replaced), every check made again on it."""
        given = str(path)
        with self._opened(given) as (resolved, handle, _):
            data = self._read_whole(given, handle)
        self._refuse_content(given, resolved, data)
        return data.decode("utf-8", errors="replace")

    # ---------------------------------------------------------------- identity

    def snapshot(self, paths: Sequence[str], *, strict: bool = True) -> list[FileStamp]:
        """Check each path and say what identifies its content now: (path, size, mtime).

        Part of a call's key, so an edited file is never answered from the cache or joined to
        a call about its old content. `strict=False` stamps a file that fails its check as
        (path, -1, -1) instead of raising (files may vanish between workflow steps).
        """
        stamps: list[FileStamp] = []
        for given in paths:
            try:
                resolved, info = self._inspect(str(given))
            except (FileAccessError, OSError):
                if strict:
                    raise
                stamps.append((str(given), -1, -1))
                continue
            stamps.append((str(resolved), info.st_size, info.st_mtime_ns))
        return stamps

    async def snapshot_async(self, paths: Sequence[str], *, strict: bool = True) -> list[FileStamp]:
        """`snapshot` in a worker thread: one hop for all the paths, none for no paths."""
        if not paths:
            return []
        call = functools.partial(self.snapshot, tuple(paths), strict=strict)
        return await anyio.to_thread.run_sync(call)

    # ---------------------------------------------------------------- embedding

    def embed(self, paths: Sequence[str], token_budget: int) -> EmbeddedFiles:
        """Check, read and render `paths` in order, each whole, within `token_budget` tokens.

        Paths naming the same file after resolving are embedded once. A file that fails its
        check or read, or does not fit in what is left of the budget, goes to `left_out` with
        the reason, and a note listing those files ends `text`. A later, smaller file may still
        fit after a larger one was left out. The note itself is not charged to the budget.
        """
        blocks: list[str] = []
        result = EmbeddedFiles(text="")
        seen: set[Path] = set()
        seen_given: set[str] = set()
        remaining = token_budget
        for given in paths:
            given = str(given)
            if given in seen_given:
                continue
            seen_given.add(given)
            try:
                # One open: the bytes checked are the bytes rendered.
                with self._opened(given) as (resolved, handle, _):
                    if resolved in seen:
                        continue
                    seen.add(resolved)
                    data = self._read_whole(given, handle)
                self._refuse_content(given, resolved, data[:_SNIFF_BYTES])  # as `check` does
                self._refuse_content(given, resolved, data)
                block = render_file(resolved, data.decode("utf-8", errors="replace"))
            except FileAccessError as exc:
                result.left_out.append((given, exc.reason))
                continue
            cost = estimate_tokens(block + "\n\n" if blocks else block)
            if cost > remaining:
                result.left_out.append(
                    (
                        given,
                        f"over the token budget (needs ~{cost} tokens, {max(remaining, 0)} left)",
                    )
                )
                continue
            remaining -= cost
            blocks.append(block)
            result.included.append(str(resolved))

        if result.left_out:
            note = [_NOTE_HEADER]
            note.extend(f"- {p}: {reason}" for p, reason in result.left_out)
            blocks.append("\n".join(note))
        result.text = "\n\n".join(blocks)
        return result

    async def embed_async(self, paths: Sequence[str], token_budget: int) -> EmbeddedFiles:
        """`embed` in a worker thread, since file reads are blocking I/O."""
        call = functools.partial(self.embed, tuple(paths), token_budget)
        return await anyio.to_thread.run_sync(call)
