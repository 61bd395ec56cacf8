"""A built wheel works as users install it: `uv build`, then `uvx --from <wheel> exai-mcp`."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from exai_mcp import __version__

ROOT = Path(__file__).resolve().parent.parent
COMMAND_WAIT = 180.0  # seconds; a cold uv cache downloads the dependencies once

pytestmark = pytest.mark.skipif(
    shutil.which("uv") is None or shutil.which("uvx") is None,
    reason="uv and uvx are not on PATH (install uv: https://docs.astral.sh/uv/)",
)


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_WAIT,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run("uv", "build", "--wheel", "--out-dir", out, ROOT, cwd=out)
    assert built.returncode == 0, built.stderr
    wheels = list(out.glob("exai_mcp-*.whl"))
    assert len(wheels) == 1, built.stderr
    return wheels[0]


def test_wheel_runs_with_uvx_and_prints_its_version(wheel: Path, tmp_path: Path) -> None:
    result = run("uvx", "--from", wheel, "exai-mcp", "--version", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"exai-mcp {__version__}"
    assert wheel.name.startswith(f"exai_mcp-{__version__}-")


def test_wheel_includes_the_whole_package_so_doctor_runs(wheel: Path, tmp_path: Path) -> None:
    # No keys: doctor imports the server, providers and store, and explains what to set.
    result = run("uvx", "--from", wheel, "exai-mcp", "doctor", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "no model provider is configured: set KIMI_API_KEY" in result.stdout
    assert "Traceback" not in result.stderr


def test_wheel_ships_the_secret_pattern_list(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert "exai_mcp/secret_paths.gitignore" in archive.namelist()


def test_uvx_from_a_checkout_runs_the_code_as_edited(tmp_path: Path) -> None:
    # uvx caches the built checkout; [tool.uv] cache-keys must make a .py edit rebuild it.
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        checkout,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "dist", ".*_cache"),
    )
    before = run("uvx", "--from", checkout, "exai-mcp", "--help", cwd=tmp_path)
    cli = checkout / "exai_mcp" / "cli.py"
    cli.write_text(cli.read_text().replace('prog="exai-mcp"', 'prog="exai-mcp-edited"'))
    after = run("uvx", "--from", checkout, "exai-mcp", "--help", cwd=tmp_path)

    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    assert "usage: exai-mcp " in before.stdout
    assert "usage: exai-mcp-edited " in after.stdout
