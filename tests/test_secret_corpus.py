"""No byte of a secret reaches a model, however its path is dressed up.

A corpus of hostile paths is built in a temporary home: secret names, their backup and editor
copies, trailing spaces and dots, odd case, secret directories behind innocently named links,
innocently named links to secrets, nested paths, and innocently named files holding keys. Each
file holds a unique marker. Every case goes through `FileAccessPolicy` directly (with the home
as root, and with `/` as root: a broad root never unlocks a secret) and through the real
server's `analyze`, where the fake provider's recorded request bodies must never hold a marker.
Innocent neighbours are shown to pass, and their markers to arrive, so the check can see a leak.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_provider import FakeProvider

from exai_mcp.files import FileAccessPolicy
from tests.conftest import in_process_client, settings_for

Make = Callable[[Path, str], Path]
"""Builds a case under the home with the marker inside, and returns the path to ask for."""


@dataclass(frozen=True)
class Case:
    id: str
    make: Make

    @property
    def marker(self) -> str:
        return "LEAK" + hashlib.sha256(self.id.encode()).hexdigest()[:16]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def link(path: Path, target: str | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def named(relative: str) -> Make:
    """A file at a secret-looking path, holding plain text (only its name gives it away)."""
    return lambda home, marker: write(home / relative, f"token = {marker}\n")


def holding(relative: str, template: str) -> Make:
    """An innocently named file whose content is the secret."""
    return lambda home, marker: write(home / relative, template.format(marker=marker))


def through_dir_link(link_at: str, real_dir: str, inside: str) -> Make:
    """A secret directory name that is a link to an innocently named directory."""

    def make(home: Path, marker: str) -> Path:
        write(home / real_dir / inside, f"token = {marker}\n")
        link(home / link_at, home / real_dir)
        return home / link_at / inside

    return make


def linked_file(link_at: str, secret: str) -> Make:
    """An innocently named link to a secret file."""

    def make(home: Path, marker: str) -> Path:
        write(home / secret, f"token = {marker}\n")
        return link(home / link_at, os.path.relpath(home / secret, (home / link_at).parent))

    return make


def chain(links: list[tuple[str, str]], real: str, inside: str, *, absolute: bool = False) -> Make:
    """Directory links (name, target) followed in order to `real`; the secret name is only a
    link in the middle. Targets are relative link text, or home-relative when `absolute`."""

    def make(home: Path, marker: str) -> Path:
        write(home / real / inside, f"token = {marker}\n")
        for at, target in links:
            link(home / at, home / target if absolute else target)
        return home / links[0][0] / inside

    return make


def file_chain(first: str, second: str, secret: str) -> Make:
    """An innocently named link to another innocently named link to a secret file."""

    def make(home: Path, marker: str) -> Path:
        write(home / secret, f"token = {marker}\n")
        link(home / second, home / secret)
        return link(home / first, home / second)

    return make


def with_dotdot(link_at: str, real_dir: str, inside: str) -> Make:
    """A secret directory behind a link, named in a path that wanders through `..`."""

    def make(home: Path, marker: str) -> Path:
        path = through_dir_link(link_at, real_dir, inside)(home, marker)
        (path.parent.parent / "x").mkdir()
        return Path(f"{path.parent.parent}/x/../{path.parent.name}/{inside}")

    return make


# --------------------------------------------------------------------------- the corpus

NEW_NAMES = [
    ".git-credentials",
    "_netrc",
    ".authinfo",
    ".htpasswd",
    ".vault-token",
    ".envrc",
    ".env-local",
    "env.production",
    "credentials",
    "secrets.yaml",
    "service-account.json",
    "terraform.tfstate",
    "keystore.jks",
    "private.asc",
    ".bash_history",
    ".config/gh/hosts.yml",
]
KNOWN_NAMES = [
    ".env",
    ".env.production",
    ".env.local",
    ".netrc",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "id_ecdsa",
    "id_dsa",
    "id_rsa_work",
    "id_ed25519-github",
    "server.pem",
    "tls.key",
    "cert.p12",
    "cert.pfx",
    "credentials.json",
    "credentials-prod.json",
    ".ssh/config",
    ".ssh/known_hosts",
    ".ssh/id_rsa.pub",
    ".gnupg/gpg.conf",
    ".aws/config",
    ".aws/credentials",
    ".azure/accessTokens.json",
    ".kube/config",
    ".docker/config.json",
    ".config/gcloud/application_default_credentials.json",
    ".config/gcloud/configurations/config_default",
]
SIBLING_NAMES = [
    ".zsh_history",
    ".python_history",
    ".psql_history",
    "secrets.yml",
    "secrets.json",
    "secrets.prod.yaml",
    "credentials.yaml",
    "credentials.csv",
    "terraform.tfstate.backup",
    "prod.tfstate",
    "vault.kdbx",
    "release.keystore",
    "id_ecdsa_sk",
    "putty.ppk",
    "AuthKey.p8",
    ".my.cnf",
    ".s3cfg",
    ".boto",
    "kubeconfig",
    "rclone.conf",
    ".config/hub",
    "service_account.json",
    "app.secret",
    "production.env",
    ".env_prod",
    "ssh_host_rsa_key",
    "secring.gpg",
    ".password-store/email/work.txt",
    ".terraform.d/credentials.tfrc.json",
    ".local/share/keyrings/login.keyring",
]
BACKUP_BASES = [
    "id_rsa",
    "key.pem",
    ".env",
    ".netrc",
    "credentials.json",
    "secrets.yaml",
    ".git-credentials",
    "terraform.tfstate",
]
BACKUP_SUFFIXES = ["~", ".bak", ".old", ".orig", ".swp", ".bak~", ".old.bak", ".backup", ".save"]
TRAILING = [
    "server.pem ",
    "server.pem.",
    "server.pem. ",
    "id_rsa ",
    "id_rsa.",
    "id_rsa..",
    ".env ",
    ".env.",
    "credentials.json ",
    ".git-credentials.",
    ".ssh /config",
    ".aws./credentials",
]
CASED = [
    "ID_RSA",
    "Id_Ed25519",
    "Server.PEM",
    "TLS.Key",
    ".ENV",
    ".Env.Production",
    ".SSH/config",
    ".AWS/credentials",
    ".Git-Credentials",
    "Terraform.TFSTATE",
    "SECRETS.YAML",
    "Credentials.JSON",
]
NESTED = [
    "proj/a/b/c/.env",
    "proj/.aws/sub/dir/notes.txt",
    "proj/deploy/prod/secrets.yaml",
    "proj/.config/gcloud/legacy_credentials/me/adc.json",
    "proj/node_modules/pkg/.npmrc",
    "proj/k8s/.kube/cache/discovery/servers.json",
    "proj/backup/.ssh.bak/config",
    "proj/.ssh~/config",
    "proj/.history/.env_20240101",
]

PEM_BODY = "MIIEowIBAAKCAQEA{marker}0123456789abcdefABCDEF\nAAAAB3NzaC1yc2EAAAADAQABAAABAQC7\n"
CONTENT = {
    "rsa-pem": ("notes.txt", "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY),
    "openssh": ("notes2.txt", "-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY),
    "ec": ("ec.txt", "-----BEGIN EC PRIVATE KEY-----\n" + PEM_BODY),
    "encrypted": ("enc.md", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + PEM_BODY),
    "pkcs8": ("pkcs8.txt", "-----BEGIN PRIVATE KEY-----\r\n" + PEM_BODY),
    "dsa": ("dsa.txt", "-----BEGIN DSA PRIVATE KEY-----\n" + PEM_BODY),
    "pgp": (
        "backup-key.txt",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\nComment: mine\n\n" + PEM_BODY,
    ),
    "pem-headers": (
        "legacy.txt",
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        "DEK-Info: AES-128-CBC,0123456789ABCDEF\n\n" + PEM_BODY,
    ),
    "yaml-indented": (
        "values.yaml",
        "tls:\n  key: |\n    -----BEGIN PRIVATE KEY-----\n    MIIEvQ{marker}IBADANBgkqhkiG9w0B\n",
    ),
    "python-literal": (
        "fixtures.py",
        'KEY = """-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk{marker}tdjEAAAA\n"""\n',
    ),
    "ovpn": ("office.conf", "client\n<key>\n-----BEGIN PRIVATE KEY-----\n" + PEM_BODY + "</key>\n"),
    "gcp-service-account": (
        "project.json",
        '{{"type": "service_account", "private_key_id": "{marker}",\n'
        ' "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n"}}\n',
    ),
    "json-private-key": ("wallet.json", '{{"private_key": "0x{marker}deadbeefcafebabe"}}\n'),
    "aws-ini": (
        "config.ini",
        "[default]\naws_access_key_id = AKIAABCDEFGHIJKLMNOP\n"
        "aws_secret_access_key = {marker}abcdefghij/+klmnopqrs\n",
    ),
    "aws-env": ("deploy.sh", "export AWS_SECRET_ACCESS_KEY={marker}ABCDEFGHIJ/+KLMNOPQRS\n"),
    "aws-json": (
        "key.json",
        '{{"AccessKey": {{"SecretAccessKey": "{marker}abcdefghij/+klmnopqrs"}}}}\n',
    ),
    "sk-key-in-client-config": (
        "mcp.json",
        '{{"mcpServers": {{"x": {{"env": {{"KIMI_API_KEY": "sk-{marker}abcdefghijklmnop1234"}}}}}}}}\n',
    ),
    "zhipu-key": (
        "run.sh",
        "export GLM_API_KEY=0123456789abcdef0123456789abcdef.AbCdEfGhIjKlMnOp  # {marker}\n",
    ),
    "github-token": ("deploy.sh", "git push https://ghp_{marker}abcdefghijklmnop@github.com/o/r\n"),
    "slack-token": ("notify.py", 'SLACK = "xoxb-123456789012-{marker}"\n'),
    "azure": (
        "settings.txt",
        "DefaultEndpointsProtocol=https;AccountName=x;"
        "AccountKey={marker}abcdefghij/+klmnopqrsyz0123456789==\n",
    ),
    "putty": (
        "session.txt",
        "PuTTY-User-Key-File-3: ssh-rsa\nEncryption: none\nPrivate-Lines: 1\n{marker}\n",
    ),
    # Past the 8 KiB that `check` samples: only the full read can find it.
    "late-key": ("late.log", "ok\n" * 4000 + "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY),
}

CASES = [
    *(Case(f"new:{n}", named(n)) for n in NEW_NAMES),
    *(Case(f"known:{n}", named(n)) for n in KNOWN_NAMES),
    *(Case(f"sibling:{n}", named(n)) for n in SIBLING_NAMES),
    *(
        Case(f"backup:{base}{suffix}", named(f"backups/{base}{suffix}"))
        for base in BACKUP_BASES
        for suffix in BACKUP_SUFFIXES
    ),
    Case("emacs:#id_rsa#", named("backups/#id_rsa#")),
    Case("emacs:#.env#", named("backups/#.env#")),
    *(Case(f"trailing:{n!r}", named(f"trailing/{n}")) for n in TRAILING),
    *(Case(f"case:{n}", named(f"cased/{n}")) for n in CASED),
    *(Case(f"nested:{n}", named(n)) for n in NESTED),
    Case("dir-link:.ssh", through_dir_link("l1/.ssh", "dotfiles/ssh", "config")),
    Case("dir-link:.aws", through_dir_link("l2/.aws", "stuff/cloud", "credentials")),
    Case("dir-link:.kube", through_dir_link("l3/.kube", "k8s", "config")),
    Case("dir-link:.gnupg", through_dir_link("l4/.gnupg", "gpg-home", "trustdb.txt")),
    Case("dir-link:.docker", through_dir_link("l5/.docker", "containers", "config.json")),
    Case("dir-link:.config/gcloud", through_dir_link("l6/.config/gcloud", "gc", "adc.json")),
    Case("dir-link:dotdot", with_dotdot("l7/.ssh", "plain7", "config")),
    Case(
        "chain:.ssh-in-the-middle",
        chain([("c1/work", "../mid/.ssh"), ("mid/.ssh", "../plain8")], "plain8", "config"),
    ),
    Case(
        "chain:.kube-absolute",
        chain([("c2/k", "mid2/.kube"), ("mid2/.kube", "plain9")], "plain9", "cfg", absolute=True),
    ),
    Case("file-link:notes->id_rsa", linked_file("fl/notes.txt", "real/.ssh/id_rsa")),
    Case("file-link:readme->.env", linked_file("fl/readme.md", "real/.env")),
    Case("file-link:config->secrets.yaml", linked_file("fl/config.yaml", "real/secrets.yaml")),
    Case("file-link:data->credentials.json", linked_file("fl/data.json", "real/credentials.json")),
    Case("file-link:x->id_rsa.bak", linked_file("fl/x.txt", "real/id_rsa.bak")),
    Case("file-link:current->id_ed25519", linked_file("keys/current", "keys/id_ed25519")),
    Case("file-link:up->.netrc", linked_file("fl/sub/c.txt", "real/.netrc")),
    Case("file-link:chain", file_chain("fl/a.txt", "fl/b.txt", "real/.git-credentials")),
    *(Case(f"content:{k}", holding(f"content/{n}", t)) for k, (n, t) in CONTENT.items()),
]

INNOCENT = [
    "keys/id_rsa.pub",
    ".env.example",
    ".env.sample",
    ".env.template",
    "keyboard.py",
    "monkey.txt",
    "tokens.py",
    "secrets.py",
    "credentials.py",
    "credentials_test.py",
    "src/credentials/models.py",
    "src/.env/lib/site.py",
    "env.py",
    "secret_santa.md",
    "passwords.md",
    "docs/ssh.md",
    "known_hosts.md",
    "history.py",
    "Dockerfile",
    "terraform/main.tf",
    "pem_parser.py",
]

# Code that talks about secrets without holding one.
INNOCENT_CONTENT = {
    "pem-parser.py": 'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):\n    pass\n',
    "boto_setup.py": 'secret = os.environ["AWS_SECRET_ACCESS_KEY"]\n',
    "settings.py": 'AWS_SECRET_ACCESS_KEY = os.getenv("AWS_SECRET_ACCESS_KEY")\n',
    "schema.json": '{"private_key": null, "public_key": ""}\n',
    "client.py": 'key = os.environ["KIMI_API_KEY"]  # "sk-..." from platform.moonshot.ai\n',
    "README.md": "Set `KIMI_API_KEY=sk-your-key-here` and `GLM_API_KEY=<id>.<secret>`.\n",
    "deps.txt": "scikit-learn==1.5.0\nsk-video-tools-and-other-long-package-names==2\n",
}


def build(home: Path, case: Case) -> Path:
    return case.make(home, case.marker)


def test_the_corpus_is_large_and_every_marker_is_unique():
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.marker for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize("broad_root", [False, True], ids=["home-root", "slash-root"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_policy_never_yields_a_secret(tmp_path: Path, case: Case, broad_root: bool):
    home = tmp_path / "home"
    path = build(home, case)
    policy = FileAccessPolicy.from_roots(["/" if broad_root else home])
    result = policy.embed([str(path)], token_budget=1_000_000)
    assert result.included == []
    [(given, reason)] = result.left_out
    assert given == str(path)
    assert reason.startswith(("is a secret location (", "holds a secret (")), reason
    assert reason.endswith("never sent to a model unless EXAI_ALLOWED_ROOTS names it explicitly")
    assert case.marker not in result.text


@pytest.mark.parametrize("relative", INNOCENT)
def test_innocent_neighbours_are_allowed(tmp_path: Path, relative: str):
    target = write(tmp_path / relative, "x = 1\n")
    policy = FileAccessPolicy.from_roots([tmp_path])
    assert policy.check(str(target)) == target.resolve()


@pytest.mark.parametrize(("name", "text"), INNOCENT_CONTENT.items())
def test_code_that_mentions_secrets_without_holding_one_is_allowed(tmp_path, name, text):
    target = write(tmp_path / name, text)
    policy = FileAccessPolicy.from_roots([tmp_path])
    assert policy.read_text(policy.check(str(target))) == text


SYSTEM = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/sudoers",
    "/etc/sudoers.d/README",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssl/private/ssl-cert-snakeoil.key",
    "/proc/self/environ",
    "/proc/self/cmdline",
    "/proc/1/environ",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/run/secrets/db_password",
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
]


@pytest.mark.parametrize("path", SYSTEM)
def test_system_credentials_are_refused_with_root_slash_before_they_are_opened(
    monkeypatch: pytest.MonkeyPatch, path: str
):
    def no_open(*args: object) -> None:
        raise AssertionError(f"{path} was opened")

    monkeypatch.setattr(FileAccessPolicy, "_open", no_open)
    policy = FileAccessPolicy.from_roots(["/"])
    result = policy.embed([path], token_budget=1_000_000)
    assert result.included == []
    [(_, reason)] = result.left_out
    assert reason.startswith("is a secret location ("), reason


# --------------------------------------------------------------------------- the real server


async def test_no_byte_of_any_secret_reaches_the_provider(fake: FakeProvider, tmp_path: Path):
    home = tmp_path / "home"
    paths = {case.id: build(home, case) for case in CASES}
    innocent = write(home / "innocent" / "app.py", "CONTROL_MARKER_7f3a = 1\n")
    accepted: list[str] = []
    settings = settings_for(fake, tmp_path, EXAI_ALLOWED_ROOTS=str(home))
    async with in_process_client(settings) as client:
        for case in CASES:
            path = str(paths[case.id])
            result = await client.call_tool("analyze", {"text": "look", "files": [path]})
            if result.is_error:
                text = result.content[0].text
                if path not in text or "secret" not in text:
                    accepted.append(f"{case.id}: {text}")
            elif result.structured_content["files_included"]:
                accepted.append(case.id)
        control = await client.call_tool("analyze", {"text": "look", "files": [str(innocent)]})

    bodies = json.dumps([request.body for request in fake.chat_requests])
    assert not control.is_error
    assert "CONTROL_MARKER_7f3a" in bodies  # the check below can see a leak
    assert accepted == []
    assert [case.id for case in CASES if case.marker in bodies] == []


async def test_late_key_is_left_out_with_the_reason_named(fake: FakeProvider, tmp_path: Path):
    late = next(case for case in CASES if case.id == "content:late-key")
    path = build(tmp_path, late)
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool("analyze", {"text": "look", "files": [str(path)]})
    assert not result.is_error
    assert result.structured_content["files_left_out"] == [
        f"{path}: holds a secret (private key block) and is never sent to a model "
        "unless EXAI_ALLOWED_ROOTS names it explicitly"
    ]
    assert late.marker not in json.dumps([r.body for r in fake.chat_requests])


async def test_system_credentials_never_reach_the_provider_with_root_slash(
    fake: FakeProvider, tmp_path: Path
):
    settings = settings_for(fake, tmp_path, EXAI_ALLOWED_ROOTS="/")
    async with in_process_client(settings) as client:
        for path in SYSTEM:
            result = await client.call_tool("analyze", {"text": "look", "files": [path]})
            assert result.is_error, path
            assert f"{path}: is a secret location (" in result.content[0].text
    assert fake.chat_count == 0


async def test_a_file_holding_this_servers_own_key_never_reaches_the_provider(
    fake: FakeProvider, tmp_path: Path
):
    """Client configs (claude_desktop_config.json, .cursor/mcp.json) hold the very keys this
    server runs with, whatever their shape: the GLM key must not go to Moonshot, or anywhere."""
    config = write(
        tmp_path / "Claude" / "claude_desktop_config.json",
        '{"mcpServers": {"exai": {"env": {"KIMI_API_KEY": "kimi-test-key-123",'
        ' "GLM_API_KEY": "glm-test-key-456"}}}}\n',
    )
    async with in_process_client(settings_for(fake, tmp_path)) as client:
        result = await client.call_tool(
            "analyze", {"text": "look", "files": [str(config)], "model": "kimi"}
        )
        step = await client.call_tool(
            "workflow",
            {
                "kind": "codereview",
                "step": "review the config",
                "step_number": 1,
                "total_steps": 2,
                "next_step_required": True,
                "findings": "none yet",
                "relevant_files": [str(config)],
            },
        )
    refusal = f"{config}: holds a secret (the value of KIMI_API_KEY) and is never sent"
    for reply, field in ((result, "files[0]"), (step, "relevant_files[0]")):
        assert reply.is_error and reply.content[0].text.startswith(f"{field}: {refusal}"), reply
    bodies = json.dumps([request.body for request in fake.chat_requests])
    assert "kimi-test-key-123" not in bodies and "glm-test-key-456" not in bodies


def test_the_policy_does_not_show_the_keys_it_holds(tmp_path: Path) -> None:
    policy = FileAccessPolicy.from_roots([tmp_path], own_keys={"KIMI_API_KEY": "sk-shown-123456"})
    assert "sk-shown" not in repr(policy)
