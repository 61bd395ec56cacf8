"""Finding, and in `spawn` mode starting, the one `exai-mcp serve --http` of this machine.

An attached stdio process (transports/attach.py) asks `Daemon` two things: does a daemon
answer at EXAI_DAEMON_URL (`answers`, a GET /health that never waits long), and, in spawn
mode, start one when none does (`start`). Starting takes an exclusive lock in the state
directory, looks again under the lock, and only then launches: ten windows opening at once
start exactly one daemon, and the nine others find it answering once they hold the lock.

The daemon is launched detached (its own session, stdin and stdout on the null device, stderr
appended to `daemon-PORT.log` beside the lock) through a short-lived launcher process, so it
is never a child of the stdio process: nothing is left to reap, and it outlives the window
that started it. It exits by itself after EXAI_DAEMON_IDLE_EXIT_SECS without a call.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx2
import platformdirs

from exai_mcp.config import Settings
from exai_mcp.errors import DaemonUnavailable
from exai_mcp.transports.addresses import is_loopback

log = logging.getLogger("exai_mcp.daemon")

PROBE_TIMEOUT = 1.0  # seconds one /health probe may take: an answering daemon takes ms
START_TIMEOUT = 30.0  # seconds a spawned daemon gets to answer /health
DRAIN_WAIT = 10.0  # seconds a draining daemon gets to exit before a new one is started
LOCK_TIMEOUT = START_TIMEOUT + 5.0  # seconds to wait for another process's start to finish
POLL_INTERVAL = 0.05  # between /health probes while a daemon starts, and lock attempts

# Runs in the launcher process: start the daemon in a session of its own, print its pid, exit.
_LAUNCHER = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
    " start_new_session=True, close_fds=True)\n"
    "print(p.pid, flush=True)\n"
)


@dataclass(frozen=True, slots=True)
class Daemon:
    """The daemon at `url` (scheme://host:port, no path), as this stdio process sees it."""

    url: str
    state_dir: Path
    idle_exit: float
    token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Daemon:
        return cls(
            url=settings.daemon_url,
            state_dir=state_dir(settings),
            idle_exit=settings.daemon_idle_exit,
            token=settings.http_token.get_secret_value() if settings.http_token else None,
        )

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"daemon-{self.port}.log"

    def headers(self, client_id: str) -> dict[str, str]:
        """What every request to the daemon carries: who we are, and the token if one is set."""
        headers = {"X-Client-Id": client_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def answers(self) -> bool:
        """Whether an exai-mcp server that takes calls answers GET /health here (healthy or
        not), within 1 s: one that drains on its way out does not count."""
        return await self.health_status() not in (None, "draining")

    async def health_status(self) -> str | None:
        """The `status` an exai-mcp server's /health gives here, or None when none answers."""
        try:
            async with httpx2.AsyncClient(timeout=PROBE_TIMEOUT) as http:
                response = await http.get(f"{self.url}/health")
            body = response.json()
        except (httpx2.HTTPError, ValueError):
            return None
        if isinstance(body, dict) and "status" in body and "version" in body:
            return str(body["status"])
        return None

    async def _gone_once_drained(self) -> None:
        """Wait (bounded) for a daemon that drains to let go of the port."""
        with anyio.move_on_after(DRAIN_WAIT):
            while True:  # polled: another process, nothing to wait on but its /health
                if await self.health_status() != "draining":
                    return
                await anyio.sleep(POLL_INTERVAL)

    async def start(self) -> None:
        """Make a daemon answer at `url`: start one unless another process did or does.

        Raises DaemonUnavailable, naming the URL and what to do, when none can be started.
        """
        problem = self.spawn_problem()
        if problem:
            raise DaemonUnavailable(problem)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_dir / f"daemon-{self.port}.lock"
        async with _exclusive(lock_path):
            await self._gone_once_drained()  # one exiting (idle) still holds the port
            if await self.answers():  # another window started it while we waited
                return
            pid = await anyio.to_thread.run_sync(self._launch)
            log.info(
                "started the exai-mcp daemon at %s (pid %d; log %s)", self.url, pid, self.log_path
            )
            with anyio.move_on_after(START_TIMEOUT):
                while not await self.answers():
                    if not _alive(pid):
                        raise DaemonUnavailable(
                            f"the exai-mcp daemon started for {self.url} exited at once; "
                            f"its log is {self.log_path}"
                        )
                    await anyio.sleep(POLL_INTERVAL)
                return
            raise DaemonUnavailable(
                f"the exai-mcp daemon started for {self.url} did not answer within "
                f"{START_TIMEOUT:g} s; its log is {self.log_path}"
            )

    def spawn_problem(self) -> str | None:
        """Why `spawn` cannot start a daemon for this URL, or None."""
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not is_loopback(parts.hostname or ""):
            return (
                f"EXAI_DAEMON=spawn starts a daemon on this machine only, but EXAI_DAEMON_URL="
                f"{self.url} is not an http:// loopback address; use http://127.0.0.1:PORT, or "
                "EXAI_DAEMON=require for a daemon that runs elsewhere"
            )
        return None

    def _launch(self) -> int:
        """Start `exai-mcp serve --http` detached; its pid."""
        host = urlsplit(self.url).hostname or "127.0.0.1"
        command = [
            sys.executable,
            "-m",
            "exai_mcp",
            "serve",
            "--http",
            "--host",
            host,
            "--port",
            str(self.port),
            "--idle-exit",
            f"{self.idle_exit:g}",
        ]
        with open(self.log_path, "ab") as log_file:
            launched = subprocess.run(
                [sys.executable, "-c", _LAUNCHER, *command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                check=False,
                timeout=30,
            )
        if launched.returncode != 0 or not launched.stdout.strip().isdigit():
            raise DaemonUnavailable(
                f"could not start the exai-mcp daemon for {self.url}; see {self.log_path}"
            )
        return int(launched.stdout)


def state_dir(settings: Settings) -> Path:
    """Where the spawn lock and the daemon's log live: beside the thread store."""
    if settings.state_db and settings.state_db != ":memory:":
        return Path(settings.state_db).expanduser().resolve().parent
    return platformdirs.user_data_path("exai-mcp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.asynccontextmanager
async def _exclusive(path: Path) -> AsyncIterator[None]:
    """An exclusive lock on `path` across processes, waited for without blocking the loop.

    flock is released by the kernel when its holder dies, so a crashed starter never leaves
    the others locked out.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        raise DaemonUnavailable(
            "EXAI_DAEMON=spawn needs flock (Linux, macOS); here, start `exai-mcp serve --http` "
            "yourself and use EXAI_DAEMON=require"
        ) from None

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with anyio.move_on_after(LOCK_TIMEOUT) as waited:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    await anyio.sleep(POLL_INTERVAL)
        if waited.cancelled_caught:
            raise DaemonUnavailable(
                f"another process has been starting the daemon for {LOCK_TIMEOUT:g} s (it "
                f"holds {path}); see {path.with_suffix('.log')}"
            )
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["Daemon", "state_dir"]
