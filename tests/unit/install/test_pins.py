"""Pins: the digest of an extension's files, stable and exact; the check names what changed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from supervisor.config import Extension, load_registry
from supervisor.install import integrity
from supervisor.install.lockfile import LOCK_NAME, update_lock
from supervisor.install.pins import (
    PinError,
    changes,
    compute,
    pin_extension,
    pinned_table,
    unpin_extension,
)
from supervisor.install.signing import SigningError, sign, verify


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


FILES = {"__init__.py": "", "a.py": "A = 1\n", "sub/b.py": "B = 2\n", "sub/c.txt": "c"}


def test_the_digest_is_stable_and_independent_of_creation_order(tmp_path: Path) -> None:
    one = _package(tmp_path / "one", FILES)
    two = _package(tmp_path / "two", dict(reversed(list(FILES.items()))))
    first, again, other = compute(one), compute(one), compute(two)
    assert first.digest == again.digest == other.digest
    assert first.digest.startswith("sha256:")
    assert len(first.digest) == len("sha256:") + 64
    assert sorted(first.files) == ["__init__.py", "a.py", "sub/b.py", "sub/c.txt"]


def test_content_mode_and_names_each_change_the_digest(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "p", FILES)
    base = compute(pkg).digest
    (pkg / "a.py").write_text("A = 2\n", encoding="utf-8")
    content = compute(pkg).digest
    os.chmod(pkg / "a.py", 0o755)
    mode = compute(pkg).digest
    (pkg / "a.py").rename(pkg / "z.py")
    renamed = compute(pkg).digest
    assert len({base, content, mode, renamed}) == 4
    assert compute(pkg).files["z.py"].startswith("x:")


def test_caches_and_droppings_are_excluded(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "p", FILES)
    base = compute(pkg).digest
    _package(
        pkg,
        {
            "__pycache__/a.cpython-311.pyc": "x",
            "sub/__pycache__/b.pyc": "x",
            "old.pyc": "x",
            ".a.py.swp": "x",
            "a.py~": "x",
            ".#a.py": "x",
            "#a.py#": "x",
            ".git/HEAD": "ref",
            ".DS_Store": "x",
        },
    )
    assert compute(pkg).digest == base


def test_a_symlink_counts_by_its_target_and_is_never_followed(tmp_path: Path) -> None:
    outside = _package(tmp_path / "outside", {"secret.py": "S = 1\n"})
    pkg = _package(tmp_path / "p", FILES)
    (pkg / "link").symlink_to(outside)
    tree = compute(pkg)
    assert tree.files["link"] == "l:" + hashlib.sha256(str(outside).encode()).hexdigest()
    assert not any(name.startswith("link/") for name in tree.files)
    (outside / "secret.py").write_text("S = 2\n", encoding="utf-8")  # outside: not pinned
    assert compute(pkg).digest == tree.digest
    (pkg / "link").unlink()
    (pkg / "link").symlink_to(tmp_path)  # retargeted: pinned
    assert compute(pkg).digest != tree.digest


def test_the_env_string_is_part_of_the_digest(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "p", FILES)
    assert compute(pkg, "envs/x-1").digest != compute(pkg, "envs/x-2").digest
    assert compute(pkg, None).digest != compute(pkg, "").digest


def test_changes_name_changed_added_and_removed_files(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "p", FILES)
    pinned = compute(pkg)
    (pkg / "a.py").write_text("A = 9\n", encoding="utf-8")
    (pkg / "sub" / "c.txt").unlink()
    (pkg / "new.py").write_text("", encoding="utf-8")
    found = changes(pinned, compute(pkg))
    assert found.changed == ("a.py",)
    assert found.added == ("new.py",)
    assert found.removed == ("sub/c.txt",)
    assert found.describe() == (
        "3 files changed since pinned: a.py, new.py (new), sub/c.txt (removed)"
    )


def test_at_most_five_names_are_listed(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "p", {f"m{i}.py": "" for i in range(8)})
    pinned = compute(pkg)
    for i in range(8):
        (pkg / f"m{i}.py").write_text("changed", encoding="utf-8")
    text = changes(pinned, compute(pkg)).describe()
    assert text == "8 files changed since pinned: m0.py, m1.py, m2.py, m3.py, m4.py, …"


# -- through the registry and the lock -------------------------------------------------------


def _registry(tmp_path: Path, extra: str = "") -> tuple[Path, Extension]:
    root = tmp_path / "extensions"
    _package(root / "servers" / "hello", FILES)
    (root / "servers.yaml").write_text(
        "servers:\n  - name: hello\n    type: local\n    path: ./servers/hello\n" + extra,
        encoding="utf-8",
    )
    result = load_registry(root, environ={})
    assert result.ok, result.errors
    return root, result.registry.extensions[0]


def test_pin_writes_the_lock_and_the_check_passes_then_names_a_changed_byte(
    tmp_path: Path,
) -> None:
    root, ext = _registry(tmp_path)
    assert integrity.check(ext) == integrity.Verdict("unpinned")
    tree = pin_extension(ext, root)
    lock = tomllib.loads((root / LOCK_NAME).read_text(encoding="utf-8"))
    assert lock["pins"]["hello"]["digest"] == tree.digest
    assert lock["pins"]["hello"]["files"] == 4
    assert (
        lock["pins"]["hello"]["tree"][2]
        == "f:" + hashlib.sha256(b"B = 2\n").hexdigest() + " sub/b.py"
    )
    assert "'f:" in (root / LOCK_NAME).read_text(encoding="utf-8")  # literal strings: fast
    verdict = integrity.check(ext)
    assert (verdict.label, verdict.problem) == ("pinned", None)
    path = root / "servers" / "hello" / "sub" / "b.py"
    path.write_bytes(path.read_bytes().replace(b"2", b"3"))
    verdict = integrity.check(ext)
    assert verdict.problem == "integrity: 1 file changed since pinned: sub/b.py"
    assert unpin_extension("hello", root)
    assert not unpin_extension("hello", root)
    assert integrity.check(ext).label == "unpinned"


def test_the_environment_recorded_in_the_lock_is_pinned(tmp_path: Path) -> None:
    root, ext = _registry(tmp_path)
    update_lock(root, "extensions", "hello", {"digest": "sha256:" + "1" * 64})
    pin_extension(ext, root)
    update_lock(root, "extensions", "hello", {"digest": "sha256:" + "2" * 64})
    assert integrity.check(ext).problem == "integrity: its environment changed since pinned"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"digest": "md5:x"}, "is inconsistent"),
        ({"digest": "sha256:x", "tree": "a.py"}, "is malformed"),
        ({"digest": "sha256:x", "tree": ["f:short a.py"]}, "is malformed"),
    ],
)
def test_a_pin_edited_by_hand_is_an_error_naming_the_lock(
    tmp_path: Path, table: dict[str, object], message: str
) -> None:
    root, ext = _registry(tmp_path)
    update_lock(root, "pins", "hello", table)
    with pytest.raises(PinError, match=rf"spctl\.lock: \[pins\.hello\] {message}"):
        pinned_table(tomllib.loads((root / LOCK_NAME).read_text()), "hello", root / LOCK_NAME)
    assert message in (integrity.check(ext).problem or "")


def test_a_tree_edited_by_hand_no_longer_matches_its_digest(tmp_path: Path) -> None:
    root, ext = _registry(tmp_path)
    pin_extension(ext, root)
    text = (root / LOCK_NAME).read_text(encoding="utf-8")
    lock = tomllib.loads(text)
    record = lock["pins"]["hello"]["tree"][1]  # a.py: claim the tampered content is pinned
    forged = "f:" + hashlib.sha256(b"A = 666\n").hexdigest() + " a.py"
    (root / LOCK_NAME).write_text(text.replace(record, forged), encoding="utf-8")
    (root / "servers" / "hello" / "a.py").write_text("A = 666\n", encoding="utf-8")
    assert "is inconsistent" in (integrity.check(ext).problem or "")


def test_nothing_to_pin_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    root.mkdir()
    (root / "servers.yaml").write_text(
        "servers:\n  - name: onpath\n    type: local\n    command: [cat]\n", encoding="utf-8"
    )
    ext = load_registry(root, environ={}).registry.extensions[0]
    with pytest.raises(PinError, match="onpath: nothing to pin"):
        pin_extension(ext, root)
    assert not (root / LOCK_NAME).exists()


def test_a_command_file_inside_the_directory_is_pinned(tmp_path: Path) -> None:
    root = tmp_path / "extensions"
    _package(root, {"bin/server.sh": "#!/bin/sh\n"})
    (root / "servers.yaml").write_text(
        "servers:\n  - name: sh\n    type: local\n    command: [./bin/server.sh]\n",
        encoding="utf-8",
    )
    ext = load_registry(root, environ={}).registry.extensions[0]
    assert sorted(pin_extension(ext, root).files) == ["server.sh"]


# -- signatures (real ssh-keygen) ------------------------------------------------------------


def _key(where: Path, name: str) -> Path:
    key = where / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


def test_sign_and_verify(tmp_path: Path) -> None:
    alice, mallory = _key(tmp_path, "alice"), _key(tmp_path, "mallory")
    allowed = tmp_path / "allowed_signers"
    public = alice.with_suffix(".pub").read_text().split()
    allowed.write_text(f"alice@example.com {public[0]} {public[1]}\n")
    digest = "sha256:" + "a" * 64
    sig = tmp_path / "x.sig"
    sign(digest, alice, sig)
    assert verify(digest, sig, allowed) == "alice@example.com"
    with pytest.raises(SigningError, match="does not verify"):
        verify("sha256:" + "b" * 64, sig, allowed)
    sign(digest, mallory, sig)
    with pytest.raises(SigningError, match=r"x\.sig is not by a key in allowed_signers"):
        verify(digest, sig, allowed)
    sig.write_text("garbage\n")
    with pytest.raises(SigningError, match=r"x\.sig is not an SSH signature"):
        verify(digest, sig, allowed)
    sig.unlink()
    with pytest.raises(SigningError, match=r"signature x\.sig not found"):
        verify(digest, sig, allowed)
    with pytest.raises(SigningError, match="no such key file"):
        sign(digest, tmp_path / "nokey", sig)
    assert not sig.exists()  # nothing half-written
