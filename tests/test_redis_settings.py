"""EXAI_REDIS_* and the quota variables: checked at start-up, and a password never shown."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis
from fake_provider import FakeProvider
from mcp import Client

import tests.redis_server as redis_server_module
from exai_mcp.config import load_settings
from exai_mcp.errors import ConfigError
from exai_mcp.middleware.cache import ResultCache
from exai_mcp.middleware.call import Answer
from exai_mcp.redact import redact_url
from exai_mcp.shared.cache import SharedCache
from exai_mcp.shared.connection import RedisLink
from exai_mcp.shared.threads import RedisThreadStore
from tests.conftest import in_process_client, provider_env, settings_for, stdio_params
from tests.redis_server import RedisServer, free_port, redis_server_binary
from tests.test_doctor import run_doctor
from tests.test_several_servers import servers, tool

PASSWORD = "hunter2-redis-password"


def test_redact_url_hides_user_and_password_and_keeps_the_rest() -> None:
    assert redact_url(f"rediss://app:{PASSWORD}@cache:6380/2") == "rediss://***@cache:6380/2"
    assert redact_url(f"redis://:{PASSWORD}@h:1/0?password=x") == "redis://***@h:1/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_bad_redis_url_stops_the_server_naming_the_variable_never_the_password(
    tmp_path: Path,
) -> None:
    (tmp_path / "none.env").touch()
    done = subprocess.run(
        [sys.executable, "-m", "exai_mcp"],
        env={
            "EXAI_REDIS_URL": f"http://user:{PASSWORD}@example",
            "EXAI_STATE_DB": ":memory:",
            "EXAI_ENV_FILE": str(tmp_path / "none.env"),
            "PATH": "",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "EXAI_REDIS_URL" in done.stderr and "rediss://" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EXAI_REDIS_LEASE_SECS", "0"),
        ("EXAI_REDIS_TIMEOUT_SECS", "-1"),
        ("EXAI_KIMI_RPM", "0"),
        ("EXAI_GLM_TPM", "many"),
        ("EXAI_REDIS_PREFIX", ""),
    ],
)
def test_bad_redis_and_quota_settings_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("EXAI_STATE_DB", ":memory:")
    if value == "":  # an empty value counts as unset: the default prefix
        assert load_settings().redis_prefix == "exai:"
        return
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_without_redis_server_the_tests_skip_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_server_module.shutil, "which", lambda _name: None)
    monkeypatch.setattr(redis_server_module, "REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        redis_server_binary()
    monkeypatch.setattr(redis_server_module, "REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="EXAI_REQUIRE_REDIS_TESTS=1"):
        redis_server_binary()


async def test_an_rpm_quota_without_redis_refuses_what_cannot_fit_before_the_deadline(
    fake: FakeProvider, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path, EXAI_KIMI_RPM=2, WORKFLOW_TOOL_TIMEOUT_SECS=2)
    async with in_process_client(settings) as client:
        results = [await client.call_tool("analyze", {"text": f"q{n}", "model": "kimi"}) for n in range(3)]  # fmt: skip
    assert [r.is_error for r in results] == [False, False, True]
    text = results[2].content[0].text
    assert "EXAI_KIMI_RPM=2" in text and "rate limited" in text
    assert fake.chat_count == 2


async def test_a_redis_password_works_and_is_never_shown(
    fake: FakeProvider, tmp_path: Path, redis_prefix: str
) -> None:
    locked = RedisServer(tmp_path, password=PASSWORD).start()
    try:
        async with servers(fake, tmp_path, locked, redis_prefix, count=1) as (a,):
            status = (await tool(a, "status", {}))["structuredContent"]
            assert status["shared"]["state"] == "shared"
            assert "***@" in status["shared"]["url"]
            assert PASSWORD not in str(status)
        assert PASSWORD not in "\n".join(a.stderr)
        wrong = RedisServer(tmp_path, password=PASSWORD)
        wrong.port = locked.port
        wrong.password = "not-the-" + PASSWORD
        async with servers(fake, tmp_path, wrong, redis_prefix, count=1) as (b,):
            status = (await tool(b, "status", {}))["structuredContent"]
            assert status["shared"]["state"] == "degraded"  # refused: serves on its own
            assert not (await tool(b, "analyze", {"text": "still served"}))["isError"]
        assert "not-the-" not in "\n".join(b.stderr) and PASSWORD not in "\n".join(b.stderr)
    finally:
        locked.stop()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made by openssl (skip without it: it is only a test tool)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: cannot make a certificate for the TLS test")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server speaking only TLS and requiring PASSWORD; yields its rediss:// URL."""
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        for _ in range(200):  # up to about 10 s for the server to listen
            try:
                client.ping()
                break
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        server.kill()
        server.wait(timeout=10)


async def test_rediss_with_a_password_shares_state_over_tls(
    tls_redis: str, redis_prefix: str
) -> None:
    url = tls_redis
    link = RedisLink(url, prefix=redis_prefix, timeout=1.0, lease=1.0)
    async with anyio.create_task_group() as tg:
        await link.start(tg)
        assert not link.degraded
        assert PASSWORD not in str(link.describe())
        cache = SharedCache(link, local=ResultCache(max_entries=4, ttl=60))
        kept = Answer("over tls", "kimi-k2", "kimi", 1, 1, 1)
        await cache.keep("k", kept)
        assert await cache.lookup("k") == kept
        tg.cancel_scope.cancel()
    await link.aclose()
    with RedisThreadStore(url, prefix=redis_prefix) as threads:
        made = threads.create("workflow", "debug")
        assert threads.get(made.id).id == made.id
        assert PASSWORD not in threads.path


async def test_doctor_checks_redis_and_never_prints_its_password(
    fake: FakeProvider, tmp_path: Path, redis_prefix: str
) -> None:
    locked = RedisServer(tmp_path, password=PASSWORD).start()
    try:
        env = {**provider_env(fake, tmp_path), "EXAI_REDIS_PREFIX": redis_prefix}
        good = await run_doctor({**env, "EXAI_REDIS_URL": locked.url}, tmp_path)
        assert "Shared state (EXAI_REDIS_URL)" in good.output
        assert "redis://***@127.0.0.1" in good.output and "ok: answers" in good.output
        assert good.status == 0, good.output
        bad_url = locked.url.replace(PASSWORD, "wrong-" + PASSWORD)
        bad = await run_doctor({**env, "EXAI_REDIS_URL": bad_url}, tmp_path)
        assert bad.status == 1 and "Redis does not answer" in bad.output
        for run in (good, bad):
            assert PASSWORD not in run.output
    finally:
        locked.stop()


async def test_over_stdio_an_unreachable_redis_leaves_the_server_answering_degraded(
    fake: FakeProvider, tmp_path: Path
) -> None:
    env = provider_env(fake, tmp_path, EXAI_REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0")  # fmt: skip
    async with Client(stdio_params(env)) as client:  # stdout must carry JSON-RPC only
        answer = await client.call_tool("analyze", {"text": "no redis"})
        status = (await client.call_tool("status", {})).structured_content
    assert not answer.is_error
    assert status["shared"]["state"] == "degraded"
    assert any("Redis" in problem for problem in status["health"])
    assert PASSWORD not in str(status)


def test_a_server_that_shares_nothing_never_imports_redis(tmp_path: Path) -> None:
    """Without EXAI_REDIS_URL the redis client is not loaded: no import time, no memory."""
    code = (
        "import sys, anyio, exai_mcp.cli, exai_mcp.transports.stdio, exai_mcp.transports.http\n"
        "from exai_mcp.config import Settings\n"
        "from exai_mcp.server import build_server\n"
        f"s = Settings(_env_file=None, state_db={str(tmp_path / 's.db')!r})\n"
        "server = build_server(s)\n"
        "async def main():\n"
        "    async with server.lifespan(server):\n"
        "        pass\n"
        "anyio.run(main)\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
