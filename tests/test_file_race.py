"""A file swapped for a symlink between its check and its read never leaks what the link targets.

A swapper process flips `root/file.txt` between a regular file (innocent text) and a symlink to
a file outside the roots (a unique marker) as fast as it can, while the file is embedded
directly and through the real server. Every run is bounded in calls and in time. Before files
were read from the descriptor they were checked on, each run here caught the outside file
(embed: 3 to 536 leaks in 2,000 calls, ten runs on a busy two-core machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_provider import FakeProvider

from exai_mcp.files import FileAccessPolicy
from tests.conftest import in_process_client, settings_for

# Many short calls rather than a few: on a busy machine the swapper and the test often share a
# core, and then a swap lands between check and read only now and then.
EMBED_CALLS = 2000
SERVER_CALLS = 300
TIME_LIMIT = 10.0  # seconds per run, whichever of calls or time ends first
SWAP_LIMIT = 10_000_000  # flips; only a bound, the time limit ends the swapper first

# Over the 8 KiB a check sniffs, as most source files are: the window between check and read
# is then as wide as it is in real use.
FILLER = "".join(f"nothing to see here, line {n}\n" for n in range(400))

pytestmark = pytest.mark.skipif(
    not hasattr(os, "symlink") or not hasattr(os, "link"), reason="needs symlinks and hard links"
)


@dataclass
class Scene:
    root: Path
    target: Path
    marker: str
    outside: Path
    innocent: Path


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    root = tmp_path / "root"
    root.mkdir()
    marker = f"OUTSIDE-{uuid.uuid4().hex}"
    outside = tmp_path / "outside" / "private.txt"
    outside.parent.mkdir()
    outside.write_text(f"{marker}\n{FILLER}", encoding="utf-8")
    innocent = root / "innocent.txt"
    innocent.write_text(FILLER, encoding="utf-8")
    target = root / "file.txt"
    os.link(innocent, target)
    return Scene(root, target, marker, outside, innocent)


# Run as its own process, as an attacker would be: a thread would share the GIL with the code
# under test and flip far too rarely to hit the window between check and read. On Linux one
# renameat2(RENAME_EXCHANGE) per flip (about ten times faster than making a link and replacing);
# elsewhere a prepared link or file replaces the target.
SWAPPER = """
import ctypes, os, signal, sys, time
target, outside, innocent, limit, seconds = sys.argv[1:]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
flips, deadline = 0, time.monotonic() + float(seconds)
try:
    exchange = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):
    exchange = None
spare = target + ".swap"
os.symlink(outside, spare)
a, b = os.fsencode(target), os.fsencode(spare)
if exchange is not None and exchange(-100, a, -100, b, 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
    exchange = None
flips += exchange is not None
print("ready", flush=True)
while not stop and flips < int(limit) and time.monotonic() < deadline:
    if exchange is not None:
        exchange(-100, a, -100, b, 2)
        flips += 1
        continue
    os.symlink(outside, spare + "-link")
    os.replace(spare + "-link", target)
    os.link(innocent, spare + "-file")
    os.replace(spare + "-file", target)  # each round ends on the innocent file
    flips += 2
if exchange is not None and flips % 2:
    exchange(-100, a, -100, b, 2)  # end on the innocent file
print(flips, flush=True)
"""


@contextmanager
def swapping(scene: Scene) -> Iterator[list[int]]:
    """Flip `scene.target` between the innocent file and a link outside until the block ends.

    Yields a list that holds the number of flips made once the block has ended.
    """
    args = [scene.target, scene.outside, scene.innocent, SWAP_LIMIT, TIME_LIMIT + 5]
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    flips: list[int] = []
    try:
        assert swapper.stdout is not None
        assert swapper.stdout.readline().strip() == "ready"
        yield flips
    finally:
        swapper.terminate()
        try:
            out, _ = swapper.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            swapper.kill()
            out, _ = swapper.communicate()
        flips.append(int(out.split()[-1]) if out.split() else 0)


def test_embed_never_reads_through_a_symlink_swapped_in_after_the_check(scene: Scene) -> None:
    policy = FileAccessPolicy.from_roots([scene.root])
    leaks = included = calls = 0
    deadline = time.monotonic() + TIME_LIMIT
    with swapping(scene) as flips:
        while calls < EMBED_CALLS and time.monotonic() < deadline:
            calls += 1
            result = policy.embed([str(scene.target)], token_budget=10_000)
            leaks += scene.marker in result.text
            included += bool(result.included)
    print(f"embed: {calls} calls, {included} included, {leaks} leaks, {flips[0]} flips")
    assert flips[0] > 0
    assert leaks == 0, f"{leaks} of {calls} embeds carried the outside file"
    # At rest the same file is read as usual.
    assert policy.embed([str(scene.target)], token_budget=10_000).included == [
        str(scene.target.resolve())
    ]


async def test_analyze_never_sends_the_target_of_a_symlink_swapped_in_after_the_check(
    fake: FakeProvider, tmp_path: Path, scene: Scene
) -> None:
    settings = settings_for(fake, tmp_path, EXAI_ALLOWED_ROOTS=str(scene.root))
    answers: list[str] = []
    calls = 0
    deadline = time.monotonic() + TIME_LIMIT
    async with in_process_client(settings) as client:
        with swapping(scene) as flips:
            while calls < SERVER_CALLS and time.monotonic() < deadline:
                calls += 1
                # A new question each time, so no answer comes from the cache.
                result = await client.call_tool(
                    "analyze", {"text": f"look #{calls}", "files": [str(scene.target)]}
                )
                answers.append(json.dumps([c.model_dump() for c in result.content]))
    sent = [json.dumps(request.body) for request in fake.chat_requests]
    leaks = sum(scene.marker in body for body in sent)
    print(f"analyze: {calls} calls, {len(sent)} sent, {leaks} leaks, {flips[0]} flips")
    assert flips[0] > 0
    assert leaks == 0, f"{leaks} of {len(sent)} provider requests carried the outside file"
    assert not any(scene.marker in answer for answer in answers)
