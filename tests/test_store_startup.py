"""A thread store that cannot serve stops start-up with one line, before the client waits.

Each broken EXAI_STATE_DB is started as a client starts the server (`python -m exai_mcp`,
stdin closed) and checked by `exai-mcp doctor`: the server exits 2, the doctor 1, and both
print one line naming EXAI_STATE_DB, the path, the reason and what to do; never a traceback.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from exai_mcp.errors import StoreUnusable
from exai_mcp.store.threads import SCHEMA_VERSION, ThreadStore
from tests.conftest import settings_for

RUN_WAIT = 30.0  # seconds; a run takes about one second, three with a locked file
EXIT_CONFIG = 2
DOCTOR_PROBLEMS = 1
HOLD_LIMIT = 60  # seconds a lock holder lives at most, even if this test dies


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str


def base_env(path: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "EXAI_STATE_DB": path,
    }


def run_both(path: str, cwd: Path, wrap: list[str] | None = None) -> tuple[Run, Run]:
    """The server with stdin closed, and doctor, started together (they share the wait)."""
    prefix = wrap or []
    procs = [
        subprocess.Popen(
            [*prefix, sys.executable, "-m", "exai_mcp", *args],
            env=base_env(path),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in ([], ["doctor", "--timeout", "1"])
    ]
    runs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=RUN_WAIT)
            runs.append(Run(proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return runs[0], runs[1]


def assert_refused(path: str, server: Run, doctor: Run, reason: str) -> None:
    """Exit 2 with one stderr line naming the variable, the path and the reason; doctor too."""
    named = f"EXAI_STATE_DB={path}:"
    lines = [line for line in server.stderr.splitlines() if named in line]
    assert server.status == EXIT_CONFIG, server.stderr
    assert len(lines) == 1, server.stderr
    assert reason in lines[0] and "EXAI_STATE_DB at" in lines[0], lines[0]
    assert "Traceback" not in server.stderr
    assert server.stdout == ""  # stdout is the protocol channel

    assert doctor.status == DOCTOR_PROBLEMS, doctor.stdout
    problem = lines[0].split(named, 1)[1]
    assert f"PROBLEM: {named}{problem}" in doctor.stdout, doctor.stdout
    assert f"- {named}{problem}" in doctor.stdout  # listed again under Result
    assert "Traceback" not in doctor.stdout + doctor.stderr


# -- the broken files ---------------------------------------------------------------------


def garbage(tmp: Path) -> str:
    path = tmp / "threads.sqlite3"
    path.write_bytes(bytes(range(256)) * 64)
    return str(path)


def text_file(tmp: Path) -> str:
    path = tmp / "notes.txt"
    path.write_text("These are my notes, not a database.\n" * 200)
    return str(path)


def dev_null(_tmp: Path) -> str:
    return os.devnull


def foreign_threads_table(tmp: Path) -> str:
    path = tmp / "other-app.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE threads (id INTEGER PRIMARY KEY, subject TEXT, body TEXT)")
        conn.execute("INSERT INTO threads (subject, body) VALUES ('hello', 'world')")
    conn.close()
    return str(path)


def another_programs_database(tmp: Path) -> str:
    path = tmp / "crm.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    conn.close()
    return str(path)


def parent_is_a_file(tmp: Path) -> str:
    (tmp / "state").write_text("a file where a directory should be\n")
    return str(tmp / "state" / "threads.sqlite3")


def a_directory(tmp: Path) -> str:
    (tmp / "state").mkdir()
    return str(tmp / "state")


def newer_schema(tmp: Path) -> str:
    path = tmp / "threads.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    return str(path)


BROKEN: dict[str, tuple[Callable[[Path], str], str]] = {
    "garbage": (garbage, "not a SQLite database (file is not a database)"),
    "text file": (text_file, "not a SQLite database (file is not a database)"),
    "/dev/null": (dev_null, "is not a regular file (a character device)"),
    "foreign threads table": (foreign_threads_table, "its 'threads' table is not exai-mcp's"),
    "another program's tables": (
        another_programs_database,
        "holds tables that are not exai-mcp's (customers)",
    ),
    "parent is a file": (parent_is_a_file, "is a file, not a directory"),
    "a directory": (a_directory, "is a directory"),
    "newer schema": (newer_schema, f"has schema version {SCHEMA_VERSION + 1}"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_store_exits_2_with_one_line_and_doctor_reports_the_same_line(
    case: str, tmp_path: Path
) -> None:
    make, reason = BROKEN[case]
    path = make(tmp_path)
    before = Path(path).read_bytes() if Path(path).is_file() else None

    server, doctor = run_both(path, tmp_path)

    assert_refused(path, server, doctor, reason)
    if before is not None:
        assert Path(path).read_bytes() == before  # another program's file is left untouched


def test_a_foreign_threads_table_is_refused_at_open_not_at_the_first_call(
    tmp_path: Path,
) -> None:
    path = foreign_threads_table(tmp_path)
    with pytest.raises(StoreUnusable, match="columns id, subject, body; expected id, tool"):
        ThreadStore(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'steps'").fetchall() == []
    finally:
        conn.close()


def test_build_server_opens_the_store_before_any_transport(tmp_path: Path) -> None:
    from exai_mcp.server import build_server

    settings = settings_for(None, tmp_path, EXAI_STATE_DB=garbage(tmp_path))
    with pytest.raises(StoreUnusable, match="not a SQLite database"):
        build_server(settings)


# -- read-only ------------------------------------------------------------------------------


def read_only_wrap(directory: Path) -> list[str] | None:
    """A command prefix that runs the child with `directory` mounted read-only.

    Root ignores permission bits, so a read-only *mount* is the only honest read-only file
    for root: a private mount namespace (unshare -m) whose bind mount vanishes with the child.
    None where that needs capabilities this environment lacks (a typical CI container).
    """
    if shutil.which("unshare") is None:
        return None
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    wrap = ["unshare", "-m", "sh", "-c", script, "sh", str(directory)]
    probe = subprocess.run(
        [*wrap, "sh", "-c", 'test ! -w "$0"', str(directory)],
        capture_output=True,
        timeout=RUN_WAIT,
        check=False,
    )
    return wrap if probe.returncode == 0 else None


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[tuple[str, list[str] | None]]:
    """A valid store the server may not write: (path, command prefix to run under)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    path = directory / "threads.sqlite3"
    ThreadStore(path).close()
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield str(path), None
        finally:
            path.chmod(0o644)
        return
    wrap = read_only_wrap(directory)
    if wrap is None:
        pytest.skip(
            "running as root, which ignores permission bits, and a read-only mount needs "
            "CAP_SYS_ADMIN (unshare -m / mount), which this environment does not grant"
        )
    yield str(path), wrap


def test_a_read_only_store_exits_2_with_one_line_and_doctor_reports_it(
    read_only_store: tuple[str, list[str] | None], tmp_path: Path
) -> None:
    path, wrap = read_only_store

    server, doctor = run_both(path, tmp_path, wrap)

    assert_refused(path, server, doctor, "is read-only")


# -- locked by another process ----------------------------------------------------------------

_HOLDER = """
import signal, sqlite3, sys
signal.alarm(int(sys.argv[3]))  # never outlive the test by much, whatever happens to it
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "wal":
    conn.execute("PRAGMA journal_mode = WAL")
conn.execute("BEGIN EXCLUSIVE")
conn.execute("CREATE TABLE IF NOT EXISTS held (x)")
print("held", flush=True)
sys.stdin.readline()  # until the test lets go (or dies: EOF)
"""


@contextmanager
def held_exclusive(path: Path, journal: str) -> Iterator[None]:
    """Another process holding `BEGIN EXCLUSIVE` on `path` for the whole block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), journal, str(HOLD_LIMIT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held", holder.stderr
        yield
    finally:
        holder.kill()
        holder.wait(timeout=RUN_WAIT)


@pytest.mark.parametrize("journal", ["delete", "wal"], ids=["plain SQLite file", "exai store"])
def test_a_locked_store_exits_2_after_a_few_tries_and_doctor_reports_it(
    journal: str, tmp_path: Path
) -> None:
    path = tmp_path / "threads.sqlite3"
    if journal == "wal":
        ThreadStore(path).close()  # our own store, held by a sqlite3 shell, say

    with held_exclusive(path, journal):
        started = time.monotonic()
        server, doctor = run_both(str(path), tmp_path)
        took = time.monotonic() - started

    assert_refused(str(path), server, doctor, "locked by another process")
    assert "still locked after 3 tries over" in server.stderr
    assert took < 15, took  # a few short tries, not a 5 s busy wait per statement


def test_a_lock_released_during_the_tries_lets_the_store_open(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite3"
    ThreadStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.6, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        with ThreadStore(path) as store:
            assert store.create("workflow", "debug").id
        assert time.monotonic() - started >= 0.5  # it did wait for the lock
    finally:
        release.join(timeout=RUN_WAIT)
        holder.close()


# -- what still opens -------------------------------------------------------------------------


def test_a_missing_file_in_a_missing_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "threads.sqlite3"
    with ThreadStore(path) as store:
        store.create("workflow", None)
    assert path.is_file()
