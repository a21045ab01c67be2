"""``spctl pin`` / ``unpin`` / ``sign``: their refusals name the cause and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from supervisor.cli.app import app
from supervisor.install.lockfile import LOCK_NAME

SERVERS = """servers:
  - name: hello
    type: local
    path: ./servers/hello
  - name: signed
    type: local
    path: ./servers/hello
    signature: ./signed.sig
    allowedSigners: ./allowed_signers
  - name: broken
    type: local
    path: ./servers/missing
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ext = tmp_path / "extensions"
    (ext / "servers" / "hello").mkdir(parents=True)
    (ext / "servers" / "hello" / "__init__.py").write_text("")
    (ext / "servers.yaml").write_text(SERVERS)
    return ext


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_pin_check_and_unpin(root: Path) -> None:
    e = ("--extensions", str(root))
    code, _, err = _run("pin", "hello", "--check", *e)
    assert (code, err) == (1, "spctl: hello is not pinned (pin it: spctl pin hello)\n")
    code, out, _ = _run("pin", "hello", *e)
    assert code == 0 and out.startswith("pinned hello: sha256:") and out.endswith(" (1 file)\n")
    assert _run("pin", "hello", "--check", *e)[0] == 0
    assert _run("unpin", "hello", *e)[1] == "unpinned hello\n"
    assert _run("unpin", "hello", *e)[1] == "hello was not pinned\n"


def test_an_unknown_or_invalid_extension_is_refused_and_nothing_is_written(root: Path) -> None:
    e = ("--extensions", str(root))
    code, _, err = _run("pin", "nope", *e)
    assert code == 1
    assert err.endswith(f"spctl: no extension 'nope' in {root}/\n")
    code, _, err = _run("pin", "broken", *e)
    assert code == 1
    assert "servers[2].path: does not exist" in err
    assert err.endswith(f"spctl: broken has errors in {root}/; fix them first\n")
    assert not (root / LOCK_NAME).exists()


def test_sign_refusals(root: Path, tmp_path: Path) -> None:
    e = ("--extensions", str(root))
    code, _, err = _run("sign", "hello", "--key", str(tmp_path / "k"), *e)
    assert (code, err) == (
        1,
        "spctl: hello has no signature: field (add signature: and allowedSigners:)\n",
    )
    code, _, err = _run("sign", "signed", "--key", str(tmp_path / "k"), *e)
    assert (code, err) == (1, f"spctl: {tmp_path / 'k'}: no such key file\n")
    assert not (root / "signed.sig").exists()


def test_sign_refuses_files_that_no_longer_match_their_pin(root: Path, tmp_path: Path) -> None:
    e = ("--extensions", str(root))
    assert _run("pin", "signed", *e)[0] == 0
    (root / "servers" / "hello" / "__init__.py").write_text("X = 1\n")
    code, _, err = _run("sign", "signed", "--key", str(tmp_path / "k"), *e)
    assert code == 1
    assert err == (
        "spctl: signed: 1 file changed since pinned: __init__.py; pin it again "
        "(spctl pin signed) before signing\n"
    )
