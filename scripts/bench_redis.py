"""Benchmark: exai-mcp with its state in Redis (EXAI_REDIS_URL) against in-process state.

    uv run scripts/bench_redis.py          # a table (about 20 s); needs redis-server on PATH
    uv run scripts/bench_redis.py --json   # the same figures and every sample, as JSON

Like `scripts/bench.py` (whose server helpers it uses): real servers over stdio, driven by the
`mcp` client, against the bundled fake provider in this process; plus a `redis-server` of its
own on an ephemeral loopback port, without persistence.

(r1) per-call overhead at 0 ms provider latency: calls one after another (result cache off,
     every call distinct, so each one goes through single-flight, permits, breaker and quota
     state), a Redis-backed server against an in-process one, interleaved round by round:
     milliseconds added per call and the calls/s ratio.
(r2) 50 distinct calls at once at 200 ms: two Redis-backed servers sharing the calls (25
     each) against one in-process server taking all 50 (the wall time of (a) in bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import KIMI, Row, burst, call, connect, exai_env, timed
from fake_provider import FakeProvider
from mcp import StdioServerParameters

ROUNDS, PER_ROUND = 5, 40
R2_CALLS, R2_LATENCY, R2_REPS = 50, 0.2, 3
TOTAL_TIMEOUT = 120.0


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench_redis: redis-server is not on PATH (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):  # up to about 10 s
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    process.kill()
    sys.exit("bench_redis: redis-server did not start")


def params(
    fake: FakeProvider, tmp: Path, name: str, *, redis: str | None, cache: bool
) -> StdioServerParameters:
    env = exai_env(fake, tmp, cache=cache, db=name)
    if redis is not None:
        env.update(EXAI_REDIS_URL=redis, EXAI_REDIS_PREFIX=f"bench-{name}:")
    return StdioServerParameters(
        command=sys.executable, args=["-m", "exai_mcp"], env=env, cwd=str(tmp)
    )


def shared_params(fake: FakeProvider, tmp: Path, name: str, redis: str) -> StdioServerParameters:
    """Servers of (r2): one Redis namespace for both, so they share everything."""
    env = exai_env(fake, tmp, cache=True, db=name)
    env.update(EXAI_REDIS_URL=redis, EXAI_REDIS_PREFIX="bench-r2:")
    return StdioServerParameters(
        command=sys.executable, args=["-m", "exai_mcp"], env=env, cwd=str(tmp)
    )


async def run(tmp: Path, errlog: Any, redis: str) -> list[Row]:
    async with FakeProvider(latency=0.0) as fake:
        async with (
            connect(params(fake, tmp, "local", redis=None, cache=False), errlog) as local,
            connect(params(fake, tmp, "redis", redis=redis, cache=False), errlog) as shared,
        ):
            for i in range(20):  # warm-up
                await call(local, "analyze", {"text": f"warm {i}", "model": KIMI})
                await call(shared, "analyze", {"text": f"warm {i}", "model": KIMI})
            samples: dict[str, list[float]] = {"local": [], "redis": []}
            for r in range(ROUNDS):
                for name, client in (("local", local), ("redis", shared)):
                    for i in range(PER_ROUND):
                        args = {"text": f"r1 {r}.{i}", "model": KIMI}
                        samples[name].append(
                            await timed(lambda c=client, a=args: call(c, "analyze", a))
                        )
            status = (await call(shared, "status", {})).structured_content["shared"]
            if status["state"] != "shared":
                raise RuntimeError(f"the Redis-backed server is not using Redis: {status}")
        med = {k: statistics.median(v) for k, v in samples.items()}
        added_ms = (med["redis"] - med["local"]) * 1000
        ratio = med["local"] / med["redis"]
        r1 = Row(
            "r1",
            f"per call at 0 ms, {ROUNDS * PER_ROUND} sequential: Redis state vs in-process",
            f"{1 / med['redis']:.0f}/s vs {1 / med['local']:.0f}/s = {ratio:.2f} "
            f"(+{added_ms:.2f} ms/call)",
            "info",
            None,
            {"median_ms": {k: round(v * 1000, 3) for k, v in med.items()},
             "added_ms": round(added_ms, 3), "ratio": round(ratio, 3),
             "samples_ms": {k: [round(s * 1000, 3) for s in v] for k, v in samples.items()}},
        )  # fmt: skip

        fake.latency = R2_LATENCY
        async with (
            connect(params(fake, tmp, "one", redis=None, cache=True), errlog) as one,
            connect(shared_params(fake, tmp, "two-a", redis), errlog) as a,
            connect(shared_params(fake, tmp, "two-b", redis), errlog) as b,
        ):
            for client in (one, a, b):
                await burst(
                    client, "analyze", [{"text": f"w{i}", "model": KIMI} for i in range(10)]
                )
            walls: dict[str, list[float]] = {"one": [], "two": []}
            requests: list[int] = []
            for rep in range(R2_REPS):
                asks = [{"text": f"r2 {rep} q{i}", "model": KIMI} for i in range(R2_CALLS)]
                wall, _ = await burst(one, "analyze", asks)
                walls["one"].append(wall)
                asks = [{"text": f"r2 two {rep} q{i}", "model": KIMI} for i in range(R2_CALLS)]
                fake.reset()
                started = time.perf_counter()
                await asyncio.gather(
                    burst(a, "analyze", asks[::2]), burst(b, "analyze", asks[1::2])
                )
                walls["two"].append(time.perf_counter() - started)
                requests.append(fake.chat_count)
        one_s, two_s = statistics.median(walls["one"]), statistics.median(walls["two"])
        r2 = Row(
            "r2",
            f"{R2_CALLS} distinct at once at {R2_LATENCY * 1000:.0f} ms: two servers on one "
            "Redis vs one in-process",
            f"{two_s:.3f} s vs {one_s:.3f} s = {two_s / one_s:.2f}x "
            f"({statistics.median(requests):.0f} provider requests)",
            "info",
            None,
            {"wall_s": {k: [round(w, 4) for w in v] for k, v in walls.items()},
             "provider_requests": requests},
        )  # fmt: skip
    return [r1, r2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="exai-bench-redis-") as tmp_name:
        tmp = Path(tmp_name)
        redis_process, redis_url = start_redis(tmp)
        try:
            with (tmp / "servers.log").open("w") as errlog:
                rows = asyncio.run(asyncio.wait_for(run(tmp, errlog, redis_url), TOTAL_TIMEOUT))
        finally:
            redis_process.kill()
            redis_process.wait()
    if opts.json:
        print(json.dumps({r.key: {"scenario": r.scenario, "measured": r.measured, **r.data}
                          for r in rows}, indent=2))  # fmt: skip
    else:
        for r in rows:
            print(f"{r.key}  {r.scenario}\n    {r.measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
