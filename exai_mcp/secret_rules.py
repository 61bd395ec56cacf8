"""What counts as a secret: by where a file is (a pattern list) and by what it holds (markers).

    hits = secret_hits(Path("/home/me/.ssh/config"))    # [SecretHit(".ssh", /home/me/.ssh, ...)]
    label = secret_content(first_bytes)                 # "private key block", or None

By location. The patterns live as data in `secret_paths.gitignore` beside this module
(gitignore syntax, compiled with `pathspec`). A path is matched from the filesystem root with
every name normalised first, so a copy or a disguise of a secret name still matches:
lower case, outer white space and trailing dots stripped (`server.pem ` and `id_rsa.` are what
Windows and some tools make of the real names), then backup and editor suffixes stripped
(`~ .bak .backup .old .orig .save .swp .swo .tmp`, emacs `#name#`), repeatedly, so
`id_rsa.bak~` is `id_rsa`. A pattern ending in `/` names a directory and everything under it;
any other pattern names a file only, so a directory called `credentials/` or `.env/` is
ordinary. A later `!pattern` cancels an earlier one that matched the same location. Every hit
says which location it protects, so the caller can let a root that names it explicitly through.

By content. `secret_content` looks for private keys and cloud credentials: a PEM or PGP
`-----BEGIN ... PRIVATE KEY-----` line followed by key material (so code that merely mentions
the marker passes), a PuTTY key header, an AWS secret access key assigned a value of at least
40 key characters (so code reading `os.environ["AWS_SECRET_ACCESS_KEY"]` passes), a JSON
`"private_key": "..."` string (GCP service accounts), an Azure storage `AccountKey=`, and API
tokens of a published shape: `sk-` keys (OpenAI, Moonshot, Anthropic), Zhipu keys, GitHub,
GitLab, Slack, Google, Stripe live and Hugging Face tokens.

Deliberately allowed, to keep ordinary source files usable: `id_*.pub`, `.env.example`,
`.env.sample`, `.env.template`, and source named like secrets (`secrets.py`, `credentials.py`,
`credentials_test.py`, `tokens.py`, `env.py`, `keyboard.py`, `secret_santa.md`): the name
lists above only name data and key formats.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathspec.pattern import Pattern

__all__ = ["SecretHit", "normalise_name", "secret_content", "secret_hits"]

PATTERNS_FILE = "secret_paths.gitignore"

_BACKUP_SUFFIXES = ("~", ".bak", ".backup", ".old", ".orig", ".save", ".swp", ".swo", ".tmp")


@dataclass(frozen=True, slots=True)
class SecretHit:
    """One rule a path matches: the pattern, and the directory or file it protects."""

    rule: str
    location: PurePath
    is_dir: bool


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    pattern: Pattern
    is_dir: bool


@functools.cache
def _rules() -> tuple[_Rule, ...]:
    """The compiled rules, on first use: a server asked about no file never loads pathspec."""
    from pathspec import GitIgnoreSpec

    text = files("exai_mcp").joinpath(PATTERNS_FILE).read_text(encoding="utf-8")
    rules = []
    for pattern in GitIgnoreSpec.from_lines(text.splitlines()).patterns:
        if pattern.include is None:  # a comment
            continue
        source = str(pattern.pattern).removeprefix("!")
        name = source.removeprefix("**/").removesuffix("/")
        rules.append(_Rule(name, pattern, is_dir=source.endswith("/")))
    return tuple(rules)


def normalise_name(name: str) -> str:
    """The name as the patterns see it (see the module docstring); never empty."""
    name = name.casefold()
    while True:
        bare = name.strip().rstrip(".").strip()
        if len(bare) > 2 and bare[0] == bare[-1] == "#":
            bare = bare[1:-1]
        for suffix in _BACKUP_SUFFIXES:
            if bare.endswith(suffix) and len(bare) > len(suffix):
                bare = bare[: -len(suffix)]
                break
        if not bare or bare == name:
            return name
        name = bare


def _location(rule: _Rule, spelled: str) -> str | None:
    """Where `rule` matches `spelled` (normalised, relative to the root), or None."""
    result = rule.pattern.match_file(spelled)
    if result is None:
        return None
    end = result.match.end()
    if end >= len(spelled):
        return None if rule.is_dir else spelled
    # The match stopped at a directory's "/": only directory rules name directories.
    return spelled[: end - 1] if rule.is_dir else None


def secret_hits(path: PurePath) -> list[SecretHit]:
    """Every rule the absolute `path` matches, each with the location it protects."""
    parts = path.parts[1:]
    spelled = "/".join(normalise_name(part) for part in parts)
    hits = []
    rules = _rules()
    for index, rule in enumerate(rules):
        if not rule.pattern.include:
            continue
        where = _location(rule, spelled)
        if where is None:
            continue
        if any(
            not later.pattern.include and _location(later, spelled) == where
            for later in rules[index + 1 :]
        ):
            continue
        depth = where.count("/") + 1
        hits.append(SecretHit(rule.name, type(path)(path.anchor, *parts[:depth]), rule.is_dir))
    return hits


_NEWLINE = rb"(?:\r?\n|\\r?\\n)"  # real line breaks, or escaped ones inside a JSON string

_CONTENT_RULES = (
    (
        "private key block",
        re.compile(
            rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
            rb"(?:" + _NEWLINE + rb"[ \t]*[A-Za-z-]+:[^\r\n\\]*)*"  # armour headers
            rb"(?:" + _NEWLINE + rb"[ \t]*)+"
            rb"[A-Za-z0-9+/=]{16}"
        ),
    ),
    ("PuTTY private key", re.compile(rb"(?m)^PuTTY-User-Key-File-\d+:")),
    (
        "AWS secret access key",
        re.compile(rb"(?i)secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}"),
    ),
    ("service-account private_key", re.compile(rb'"private_key"\s*:\s*"[^"]{16}')),
    ("Azure storage AccountKey", re.compile(rb"AccountKey=[A-Za-z0-9+/]{40}")),
    # API tokens by their published shapes. A token usually sits on one line of an ordinary
    # config file or script, and that is exactly what MCP client configs hold (the keys this
    # server itself is given), so the whole file is refused, not just the line.
    (
        "API key (sk-...)",  # OpenAI, Moonshot (Kimi), Anthropic, DeepSeek: with a digit
        re.compile(rb"(?<![A-Za-z0-9_-])sk-(?=[A-Za-z0-9_-]{0,80}[0-9])[A-Za-z0-9_-]{32,}"),
    ),
    (
        "Zhipu (GLM) API key",
        re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}\.[0-9A-Za-z]{16}(?![0-9A-Za-z])"),
    ),
    (
        "GitHub token",
        re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,})"),
    ),
    ("GitLab token", re.compile(rb"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Slack token", re.compile(rb"\bxox[abposr]-[0-9]{6,}-[A-Za-z0-9-]{8,}")),
    ("Google API key", re.compile(rb"\bAIza[0-9A-Za-z_-]{35}")),
    ("Stripe live key", re.compile(rb"\b[rs]k_live_[0-9A-Za-z]{24,}")),
    ("Hugging Face token", re.compile(rb"\bhf_[A-Za-z]{34}\b")),
)


def secret_content(data: bytes) -> str | None:
    """What secret `data` holds (a short label), or None."""
    for label, marker in _CONTENT_RULES:
        if marker.search(data):
            return label
    return None
