"""A real `redis-server` for the tests: ephemeral loopback port, no persistence, never a fake.

Without `redis-server` on PATH the Redis tests skip and say how to install it; with
EXAI_REQUIRE_REDIS_TESTS=1 (CI) that skip is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

# Read at import: the autouse fixture clears EXAI_* variables before each test runs.
REQUIRED = os.environ.get("EXAI_REQUIRE_REDIS_TESTS") == "1"
INSTALL_HINT = (
    "redis-server is not on PATH: install it to run the Redis tests "
    "(`apt-get install redis-server` on Debian/Ubuntu, `brew install redis` on macOS)"
)
START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """The redis-server path, or skip (fail under EXAI_REQUIRE_REDIS_TESTS=1)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRED:
            pytest.fail(f"EXAI_REQUIRE_REDIS_TESTS=1 but {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; `restart` keeps its port, so clients can come back."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:  # bounded: START_TIMEOUT
                try:
                    client.ping()
                    return self
                except redis.exceptions.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"redis-server did not start on {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()
