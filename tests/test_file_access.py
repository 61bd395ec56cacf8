"""FileAccessPolicy: which files a tool may read, and how they are rendered and budgeted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exai_mcp.errors import FileAccessError, InputError
from exai_mcp.files import (
    EmbeddedFiles,
    FileAccessPolicy,
    estimate_tokens,
    number_lines,
    render_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def policy(root: Path) -> FileAccessPolicy:
    return FileAccessPolicy.from_roots([root], max_file_bytes=1000)


def write(path: Path, content: str | bytes = "hello\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def refusal(policy: FileAccessPolicy, path: str | Path) -> FileAccessError:
    with pytest.raises(FileAccessError) as info:
        policy.check(str(path))
    return info.value


# --------------------------------------------------------------------------- check


def test_file_inside_a_root_is_allowed_and_returned_resolved(policy, root):
    target = write(root / "src" / "app.py")
    assert policy.check(str(root / "src" / ".." / "src" / "app.py")) == target.resolve()


def test_from_roots_resolves_roots_and_keeps_the_limit(root):
    link = root.parent / "root-link"
    link.symlink_to(root)
    policy = FileAccessPolicy.from_roots([str(link)], max_file_bytes=42)
    assert policy.roots == (root.resolve(),)
    assert policy.max_file_bytes == 42


def test_default_size_limit_is_one_mebibyte(root):
    assert FileAccessPolicy(roots=(root,)).max_file_bytes == 1 << 20


def test_relative_path_is_refused_as_not_absolute(policy):
    error = refusal(policy, "src/app.py")
    assert error.reason == "must be an absolute path (got a relative one)"
    assert error.path == "src/app.py"
    assert isinstance(error, InputError)


def test_missing_file_is_refused_as_not_existing(policy, root):
    error = refusal(policy, root / "nope.py")
    assert error.reason == "does not exist"
    assert str(error) == f"{root / 'nope.py'}: does not exist"


def test_directory_is_refused_as_not_a_regular_file(policy, root):
    (root / "pkg").mkdir()
    assert refusal(policy, root / "pkg").reason == "is not a regular file"


def test_fifo_is_refused_without_blocking(policy, root):
    fifo = root / "pipe"
    os.mkfifo(fifo)
    assert refusal(policy, fifo).reason == "is not a regular file"


def test_file_outside_roots_is_refused_with_rule_named(policy, root, tmp_path):
    outside = write(tmp_path / "elsewhere" / "notes.txt")
    reason = refusal(policy, outside).reason
    assert reason == (
        f"is outside the allowed roots ({root.resolve()}); set EXAI_ALLOWED_ROOTS to allow it"
    )


def test_outside_reason_lists_every_root(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    policy = FileAccessPolicy.from_roots([first, second], max_file_bytes=1000)
    reason = refusal(policy, write(tmp_path / "c" / "x.txt")).reason
    assert f"({first.resolve()}, {second.resolve()})" in reason


def test_symlink_escaping_the_root_is_refused_as_outside(policy, root, tmp_path):
    target = write(tmp_path / "elsewhere" / "private.txt")
    link = root / "innocent.txt"
    link.symlink_to(target)
    error = refusal(policy, link)
    assert error.reason.startswith("is outside the allowed roots")
    assert error.path == str(link)


def test_dotdot_escaping_the_root_is_refused_as_outside(policy, root, tmp_path):
    write(tmp_path / "elsewhere" / "private.txt")
    sneaky = f"{root}/../elsewhere/private.txt"
    assert refusal(policy, sneaky).reason.startswith("is outside the allowed roots")


def test_symlink_staying_inside_the_root_is_allowed(policy, root):
    target = write(root / "real.txt")
    link = root / "alias.txt"
    link.symlink_to(target)
    assert policy.check(str(link)) == target.resolve()


# --------------------------------------------------------------------------- secrets


def secret_reason(rule: str) -> str:
    return (
        f"is a secret location ({rule}) and is never sent to a model "
        "unless EXAI_ALLOWED_ROOTS names it explicitly"
    )


def test_file_under_an_ssh_directory_is_refused_as_secret(policy, root):
    config = write(root / ".ssh" / "config", "Host *\n")
    assert refusal(policy, config).reason == secret_reason(".ssh")


@pytest.mark.parametrize(
    ("relative", "rule"),
    [
        (".aws/config", ".aws"),
        (".kube/config", ".kube"),
        (".docker/config.json", ".docker"),
        (".gnupg/pubring.kbx", ".gnupg"),
        (".azure/profile.txt", ".azure"),
        (".config/gcloud/configurations/config_default", ".config/gcloud"),
    ],
)
def test_files_under_every_secret_directory_are_refused(policy, root, relative, rule):
    assert refusal(policy, write(root / relative)).reason == secret_reason(rule)


def test_dot_env_file_is_refused_as_secret(policy, root):
    assert refusal(policy, write(root / ".env", "KEY=1\n")).reason == secret_reason(".env")


def test_dot_env_variant_is_refused_as_secret(policy, root):
    reason = refusal(policy, write(root / ".env.production")).reason
    assert reason == secret_reason(".env.*")


@pytest.mark.parametrize("name", [".env.example", ".env.sample", ".env.template"])
def test_dot_env_example_files_are_allowed(policy, root, name):
    target = write(root / name, "KEY=\n")
    assert policy.check(str(target)) == target.resolve()


@pytest.mark.parametrize("name", ["id_rsa", "id_ed25519", "id_ecdsa", "id_dsa", "id_rsa_work"])
def test_private_key_names_are_refused_as_secret(policy, root, name):
    reason = refusal(policy, write(root / "keys" / name)).reason
    assert reason.startswith("is a secret location (id_")


def test_public_key_half_is_allowed_outside_secret_directories(policy, root):
    target = write(root / "keys" / "id_ed25519.pub", "ssh-ed25519 AAAA\n")
    assert policy.check(str(target)) == target.resolve()


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("server.pem", "*.pem"),
        ("tls.key", "*.key"),
        ("cert.p12", "*.p12"),
        ("cert.pfx", "*.pfx"),
        ("credentials.json", "credentials*.json"),
        ("credentials-prod.json", "credentials*.json"),
        (".netrc", ".netrc"),
        (".pgpass", ".pgpass"),
        (".npmrc", ".npmrc"),
        (".pypirc", ".pypirc"),
    ],
)
def test_secret_file_names_are_refused_with_the_rule_named(policy, root, name, rule):
    assert refusal(policy, write(root / name)).reason == secret_reason(rule)


def test_secret_rule_is_checked_after_resolving_symlinks(policy, root):
    write(root / ".ssh" / "config", "Host *\n")
    link = root / "ssh-config.txt"
    link.symlink_to(root / ".ssh" / "config")
    assert refusal(policy, link).reason == secret_reason(".ssh")


def test_root_naming_a_secret_directory_explicitly_allows_files_in_it(root):
    config = write(root / ".ssh" / "config", "Host *\n")
    policy = FileAccessPolicy.from_roots([root, root / ".ssh"], max_file_bytes=1000)
    assert policy.check(str(config)) == config.resolve()


def test_root_inside_a_secret_directory_allows_files_under_it(root):
    config = write(root / ".aws" / "project" / "notes.txt")
    policy = FileAccessPolicy.from_roots([root / ".aws" / "project"], max_file_bytes=1000)
    assert policy.check(str(config)) == config.resolve()


def test_root_naming_a_secret_directory_does_not_unlock_private_keys_in_it(root):
    key = write(root / ".ssh" / "id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n")
    policy = FileAccessPolicy.from_roots([root / ".ssh"], max_file_bytes=1000)
    assert refusal(policy, key).reason == secret_reason("id_rsa*")


def test_root_naming_a_secret_file_explicitly_allows_it(root):
    env = write(root / ".env", "KEY=1\n")
    policy = FileAccessPolicy.from_roots([root, env], max_file_bytes=1000)
    assert policy.check(str(env)) == env.resolve()


def test_broad_root_containing_a_secret_directory_does_not_unlock_it(root):
    config = write(root / ".ssh" / "config")
    policy = FileAccessPolicy.from_roots([root, root / "other"], max_file_bytes=1000)
    assert refusal(policy, config).reason == secret_reason(".ssh")


def test_secret_directory_behind_an_innocent_link_is_refused_by_its_given_name(policy, root):
    write(root / "dotfiles" / "ssh" / "config", "Host *\n")
    (root / ".ssh").symlink_to(root / "dotfiles" / "ssh")
    assert refusal(policy, root / ".ssh" / "config").reason == secret_reason(".ssh")


def test_secret_name_halfway_along_a_chain_of_links_is_refused(policy, root):
    write(root / "plain" / "config", "Host *\n")
    (root / "hidden").mkdir()
    (root / "hidden" / ".ssh").symlink_to(root / "plain")
    (root / "work").symlink_to(root / "hidden" / ".ssh")
    assert refusal(policy, root / "work" / "config").reason == secret_reason(".ssh")


def test_root_naming_a_linked_secret_directory_allows_files_in_it(root):
    config = write(root / "dotfiles" / "ssh" / "config", "Host *\n")
    (root / ".ssh").symlink_to(root / "dotfiles" / "ssh")
    policy = FileAccessPolicy.from_roots([root / ".ssh"], max_file_bytes=1000)
    assert policy.check(str(root / ".ssh" / "config")) == config.resolve()


@pytest.mark.parametrize(
    "name", ["id_rsa.bak~", "ID_RSA", "server.pem ", "server.pem.", ".env.old"]
)
def test_copies_and_disguises_of_secret_names_are_refused(policy, root, name):
    assert refusal(policy, write(root / name)).reason.startswith("is a secret location (")


def test_a_symlink_loop_is_refused_as_unresolvable(policy, root):
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    assert refusal(policy, root / "a").reason == (
        "cannot be resolved (a symlink loop or an invalid path)"
    )


PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"


def test_innocently_named_file_holding_a_private_key_is_refused(policy, root):
    notes = write(root / "notes.txt", "my key:\n" + PEM)
    assert refusal(policy, notes).reason == (
        "holds a secret (private key block) and is never sent to a model "
        "unless EXAI_ALLOWED_ROOTS names it explicitly"
    )


def test_a_key_past_the_sample_is_refused_when_read(root):
    late = write(root / "late.txt", "x\n" * 5000 + PEM)
    policy = FileAccessPolicy.from_roots([root])
    resolved = policy.check(str(late))  # only the first 8 KiB are sniffed here
    with pytest.raises(FileAccessError, match=r"holds a secret \(private key block\)"):
        policy.read_text(resolved)


def test_only_a_root_that_is_the_file_itself_unlocks_secret_content(root):
    notes = write(root / "notes.txt", PEM)
    assert refusal(FileAccessPolicy.from_roots([root]), notes).reason.startswith("holds a secret")
    policy = FileAccessPolicy.from_roots([root, notes], max_file_bytes=1000)
    assert policy.read_text(policy.check(str(notes))) == PEM


def test_a_header_without_key_material_is_not_a_secret(policy, root):
    code = write(root / "parse.py", 'BEGIN = "-----BEGIN RSA PRIVATE KEY-----"\n')
    assert policy.check(str(code)) == code.resolve()


# --------------------------------------------------------------------------- size, binary, text


def test_oversized_file_is_refused_and_the_message_names_the_limit(policy, root):
    big = write(root / "big.txt", "x" * 1001)
    assert refusal(policy, big).reason == (
        "is 1001 bytes, over the EXAI_MAX_FILE_BYTES limit of 1000 bytes"
    )


def test_file_exactly_at_the_limit_is_allowed(policy, root):
    target = write(root / "edge.txt", "x" * 1000)
    assert policy.check(str(target)) == target.resolve()


def test_file_that_grew_after_check_is_refused_at_read_time(policy, root):
    target = write(root / "grows.log", "x" * 10)
    resolved = policy.check(str(target))
    target.write_text("x" * 5000)
    with pytest.raises(FileAccessError) as info:
        policy.read_text(resolved)
    assert "over the EXAI_MAX_FILE_BYTES limit of 1000 bytes" in info.value.reason


def test_binary_file_with_a_nul_byte_is_refused(policy, root):
    blob = write(root / "image.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert refusal(policy, blob).reason == (
        "looks like a binary file; only text files can be analysed"
    )
    with pytest.raises(FileAccessError, match="looks like a binary file"):
        policy.read_text(blob)


def test_mostly_undecodable_bytes_are_treated_as_binary(policy, root):
    blob = write(root / "noise.dat", bytes(range(0x80, 0x100)) * 2)
    assert "looks like a binary file" in refusal(policy, blob).reason


def test_latin1_bytes_decode_without_raising(policy, root):
    latin = write(root / "menu.txt", "café naïve résumé\n".encode("latin-1"))
    text = policy.read_text(policy.check(str(latin)))
    assert text.startswith("caf\ufffd na\ufffdve r\ufffdsum\ufffd")


def test_utf8_text_is_read_unchanged(policy, root):
    target = write(root / "greek.txt", "αβγ → ok\n")
    assert policy.read_text(policy.check(str(target))) == "αβγ → ok\n"


def test_empty_file_is_allowed_and_reads_as_empty(policy, root):
    target = write(root / "empty.txt", "")
    assert policy.read_text(policy.check(str(target))) == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_refused_as_permission_denied(policy, root):
    target = write(root / "locked.txt")
    target.chmod(0)
    try:
        assert refusal(policy, target).reason == "cannot be read (permission denied)"
    finally:
        target.chmod(0o600)


# --------------------------------------------------------------------------- rendering


def test_number_lines_right_aligns_one_based_numbers_before_a_bar():
    assert number_lines("first\nsecond\n") == "    1│ first\n    2│ second"


def test_number_lines_widens_for_long_files_and_keeps_empty_lines_bare():
    text = "\n".join(["x"] * 100_000)
    numbered = number_lines(text).split("\n")
    assert numbered[0] == "     1│ x"
    assert numbered[-1] == "100000│ x"
    assert number_lines("a\n\nb") == "    1│ a\n    2│\n    3│ b"


def test_number_lines_counts_crlf_lines_like_an_editor():
    assert number_lines("a\r\nb\r\n") == "    1│ a\n    2│ b"


def test_estimate_tokens_is_chars_over_four_rounded_up():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


def test_render_file_wraps_numbered_lines_in_named_markers():
    rendered = render_file(Path("/abs/app.py"), "import os\nprint(os)\n")
    assert rendered == (
        "--- BEGIN FILE: /abs/app.py (2 lines) ---\n"
        "    1│ import os\n"
        "    2│ print(os)\n"
        "--- END FILE: /abs/app.py ---"
    )


def test_render_file_of_an_empty_file_has_only_markers():
    assert render_file(Path("/abs/e"), "") == (
        "--- BEGIN FILE: /abs/e (0 lines) ---\n--- END FILE: /abs/e ---"
    )


# --------------------------------------------------------------------------- embed


def test_embed_within_budget_includes_every_file_in_order(policy, root):
    a = write(root / "a.py", "A = 1\n")
    b = write(root / "b.py", "B = 2\n")
    result = policy.embed([str(a), str(b)], token_budget=10_000)
    assert isinstance(result, EmbeddedFiles)
    assert result.included == [str(a.resolve()), str(b.resolve())]
    assert result.left_out == []
    assert result.text == (
        render_file(a.resolve(), "A = 1\n") + "\n\n" + render_file(b.resolve(), "B = 2\n")
    )
    assert "NOT included" not in result.text


def test_embed_over_budget_leaves_later_files_out_with_a_reason_and_a_note(policy, root):
    small = write(root / "small.py", "x = 1\n")
    large = write(root / "large.py", "y = 2\n" * 100)
    first_cost = estimate_tokens(render_file(small.resolve(), "x = 1\n"))
    budget = first_cost + 5
    result = policy.embed([str(small), str(large)], token_budget=budget)

    assert result.included == [str(small.resolve())]
    [(path, reason)] = result.left_out
    assert path == str(large)
    needed = estimate_tokens(render_file(large.resolve(), "y = 2\n" * 100) + "\n\n")
    assert reason == f"over the token budget (needs ~{needed} tokens, 5 left)"
    assert "END FILE" in result.text and "large.py (" not in result.text
    assert result.text.endswith(f"- {large}: {reason}")
    assert "--- NOTE: these files were NOT included ---" in result.text


def test_embed_never_cuts_a_file_mid_way(policy, root):
    big = write(root / "big.py", "z = 3\n" * 100)
    result = policy.embed([str(big)], token_budget=10)
    assert result.included == []
    assert "BEGIN FILE" not in result.text
    assert str(big) in result.text


def test_embed_lets_a_later_smaller_file_use_the_remaining_budget(policy, root):
    large = write(root / "large.py", "y = 2\n" * 100)
    small = write(root / "small.py", "x = 1\n")
    budget = estimate_tokens(render_file(small.resolve(), "x = 1\n")) + 5
    result = policy.embed([str(large), str(small)], token_budget=budget)
    assert result.included == [str(small.resolve())]
    assert [p for p, _ in result.left_out] == [str(large)]


def test_duplicate_paths_are_embedded_once(policy, root):
    a = write(root / "a.py", "A = 1\n")
    link = root / "alias.py"
    link.symlink_to(a)
    paths = [str(a), str(a), f"{root}/./a.py", str(link)]
    result = policy.embed(paths, token_budget=10_000)
    assert result.included == [str(a.resolve())]
    assert result.left_out == []
    assert result.text.count("BEGIN FILE") == 1


def test_refused_paths_are_listed_as_left_out_with_their_reason(policy, root):
    good = write(root / "good.py")
    env = write(root / ".env", "KEY=1\n")
    result = policy.embed(["relative.py", str(env), str(good)], token_budget=10_000)
    assert result.included == [str(good.resolve())]
    assert result.left_out == [
        ("relative.py", "must be an absolute path (got a relative one)"),
        (str(env), secret_reason(".env")),
    ]
    assert "- relative.py: must be an absolute path" in result.text


def test_a_file_deleted_before_embed_is_listed_as_left_out(policy, root):
    gone = write(root / "gone.py")
    policy.check(str(gone))
    gone.unlink()
    result = policy.embed([str(gone)], token_budget=10_000)
    assert result.included == []
    assert result.left_out == [(str(gone), "does not exist")]
    assert result.text.endswith(f"- {gone}: does not exist")


async def test_embed_async_gives_the_same_result_as_embed(policy, root):
    a = write(root / "a.py", "A = 1\n")
    expected = policy.embed([str(a)], token_budget=10_000)
    assert await policy.embed_async([str(a)], token_budget=10_000) == expected


# --------------------------------------------------------------------------- checked, then read once


CHANGED = "changed while it was being read ("
LINK_APPEARED = f"{CHANGED}a symbolic link appeared on its path)"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    return write(tmp_path / "elsewhere" / "private.txt", "OUTSIDE-MARKER\n")


def after_path_check(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Run `change` once the path was checked and before the file is opened, as a racer would."""
    check_path = FileAccessPolicy._check_path

    def then_change(self: FileAccessPolicy, given: str) -> Path:
        resolved = check_path(self, given)
        change()
        return resolved

    monkeypatch.setattr(FileAccessPolicy, "_check_path", then_change)


def swap_for_link(path: Path, target: Path) -> None:
    spare = path.with_name(path.name + ".swap")
    spare.symlink_to(target)
    os.replace(spare, path)


def test_a_file_swapped_for_an_outside_link_after_its_check_is_refused_not_read(
    monkeypatch, policy, root, outside
):
    target = write(root / "file.txt")
    after_path_check(monkeypatch, lambda: swap_for_link(target, outside))
    result = policy.embed([str(target)], token_budget=10_000)
    assert "OUTSIDE-MARKER" not in result.text
    [(_, reason)] = result.left_out
    assert reason.startswith(LINK_APPEARED)


def test_a_directory_swapped_for_an_outside_link_after_the_check_is_refused_not_read(
    monkeypatch, policy, root, outside
):
    target = write(root / "sub" / "private.txt")

    def swap() -> None:
        os.rename(root / "sub", root / "sub.old")
        (root / "sub").symlink_to(outside.parent)

    after_path_check(monkeypatch, swap)
    with pytest.raises(FileAccessError) as info:
        policy.read_text(target)
    assert info.value.reason.startswith(LINK_APPEARED)


def test_a_file_moved_out_of_the_roots_while_open_is_refused(monkeypatch, policy, root, tmp_path):
    target = write(root / "file.txt")
    moved = tmp_path / "elsewhere" / "file.txt"
    moved.parent.mkdir()
    real_open = FileAccessPolicy._open

    def open_then_move(given: str, resolved: Path) -> int:
        fd = real_open(given, resolved)
        os.rename(target, moved)
        return fd

    monkeypatch.setattr(FileAccessPolicy, "_open", staticmethod(open_then_move))
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to say where an open file is")
    reason = refusal(policy, target).reason
    assert reason.startswith(f"changed while it was being read: it is now {moved.resolve()}, ")
    assert "is outside the allowed roots" in reason


def test_without_proc_a_file_swapped_after_opening_is_refused_by_its_identity(
    monkeypatch, policy, root
):
    target = write(root / "file.txt")
    monkeypatch.setattr("exai_mcp.files.where_now", lambda fd: None)
    assert policy.check(str(target)) == target.resolve()  # unchanged: allowed
    real_open = FileAccessPolicy._open

    def open_then_replace(given: str, resolved: Path) -> int:
        fd = real_open(given, resolved)
        write(root / "other.txt", "other\n").replace(target)
        return fd

    monkeypatch.setattr(FileAccessPolicy, "_open", staticmethod(open_then_replace))
    assert refusal(policy, target).reason.startswith(f"{CHANGED}it was replaced)")


def test_a_link_inside_a_root_to_a_file_inside_a_root_is_embedded(policy, root):
    real = write(root / "real.py", "REAL = 1\n")
    (root / "links").mkdir()
    (root / "links" / "alias.py").symlink_to(real)
    (root / "dirlink").symlink_to(root / "links")
    result = policy.embed([str(root / "dirlink" / "alias.py")], token_budget=10_000)
    assert result.included == [str(real.resolve())]
    assert "REAL = 1" in result.text


def test_read_text_checks_the_path_too(policy, outside):
    with pytest.raises(FileAccessError, match="is outside the allowed roots"):
        policy.read_text(outside)


def test_a_policy_with_no_root_refuses_every_file_naming_the_variable(root):
    target = write(root / "file.txt")
    reason = refusal(FileAccessPolicy(roots=()), target).reason
    assert reason.startswith("no directory is allowed for file access")
    assert reason.endswith("set EXAI_ALLOWED_ROOTS to the directories tools may read")


def test_a_platform_that_cannot_open_without_following_links_refuses_clearly(
    monkeypatch, policy, root
):
    target = write(root / "file.txt")
    monkeypatch.setattr("exai_mcp.nofollow._CAN_OPEN_WITHOUT_LINKS", False)
    assert "lacks openat with O_NOFOLLOW" in refusal(policy, target).reason


def test_no_descriptor_is_left_open_by_checks_reads_or_refusals(policy, root, outside):
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc to count descriptors")
    good = write(root / "good.txt")
    (root / "pkg").mkdir()
    link = root / "out.txt"
    link.symlink_to(outside)
    before = len(list(fds.iterdir()))
    for _ in range(20):
        policy.check(str(good))
        policy.embed([str(good), str(root / "pkg"), str(link), str(root / "nope")], 10_000)
    assert len(list(fds.iterdir())) == before
