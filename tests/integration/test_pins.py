"""Pins and signatures with a real supervisor, real files and real ``ssh-keygen``: a pinned or
signed extension starts; a changed byte or a foreign key leaves it ``failed`` with the reason,
and its worker never runs (no events written, no restarts)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.config import load_registry
from supervisor.install import integrity
from tests.helpers import FIXTURES, SPCTL, Serve, module_entry, serve_fixture

NAMES = ("pinned", "tampered", "foreign", "signed", "unsigned")


def _key(where: Path, name: str) -> Path:
    key = where / name
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)]
    subprocess.run(argv, check=True)
    return key


def _entry(name: str, events: Path, **extra: Any) -> dict[str, Any]:
    entry = module_entry(name, "ok_daemon", config={"events": str(events / name)}, **extra)
    entry["path"] = f"./modules/{name}"
    return entry


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Path]]:
    tmp = tmp_path_factory.mktemp("pins")
    events = tmp / "events"
    events.mkdir()
    signing = {"signature": "./sigs/{}.sig", "allowedSigners": "./allowed_signers"}
    entries = [
        _entry(name, events, **({k: v.format(name) for k, v in signing.items()}))
        if name in ("foreign", "signed", "unsigned")
        else _entry(name, events)
        for name in NAMES
    ]
    with serve_fixture(tmp, entries) as s:
        for name in NAMES:
            shutil.copytree(FIXTURES / "ok_daemon", s.extensions / "modules" / name)
        alice, mallory = _key(tmp, "alice"), _key(tmp, "mallory")
        kind, key, _ = alice.with_suffix(".pub").read_text().split()
        (s.extensions / "allowed_signers").write_text(f"alice@example.com {kind} {key}\n")
        ext = ("--extensions", str(s.extensions))
        for name in ("pinned", "tampered"):
            out = s.spctl("pin", name, *ext)
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith(f"pinned {name}: sha256:")
        for name, who in (("signed", alice), ("foreign", mallory)):
            out = s.spctl("sign", name, "--key", str(who), *ext)
            assert out.returncode == 0, out.stderr
        # one byte changed after the pin
        init = s.extensions / "modules" / "tampered" / "__init__.py"
        data = init.read_bytes()
        init.write_bytes(data.replace(b"1.2.3", b"1.2.4", 1))
        s.start()
        yield s, events
        s.stop()


def test_a_pinned_extension_starts_and_status_says_pinned(world: tuple[Serve, Path]) -> None:
    s, events = world
    assert s.wait_state("pinned", "running")["integrity"] == "pinned"
    out = s.spctl("status", "pinned")
    assert "integrity: pinned" in out.stdout
    assert (events / "pinned").exists()


def test_one_byte_changed_is_failed_and_its_worker_never_started(
    world: tuple[Serve, Path],
) -> None:
    s, events = world
    ext = s.wait_state("tampered", "failed")
    assert ext["reason"] == "integrity: 1 file changed since pinned: __init__.py"
    assert ext["restarts"] == 0
    assert ext["pid"] is None
    assert not (events / "tampered").exists()
    out = s.spctl("pin", "tampered", "--check", "--extensions", str(s.extensions))
    assert out.returncode == 1
    assert out.stdout.splitlines() == ["tampered: 1 file changed since pinned", "  __init__.py"]
    # still refused when asked again; a new pin is taken at the next start
    assert s.spctl("start", "tampered").returncode == 1
    assert not (events / "tampered").exists()
    assert s.spctl("pin", "tampered", "--extensions", str(s.extensions)).returncode == 0
    out = s.spctl("start", "tampered")
    assert out.returncode == 0, out.stderr
    assert s.wait_state("tampered", "running")["integrity"] == "pinned"
    assert (events / "tampered").exists()


def test_a_signature_by_a_key_not_in_allowed_signers_is_failed(world: tuple[Serve, Path]) -> None:
    s, events = world
    ext = s.wait_state("foreign", "failed")
    assert ext["reason"] == "integrity: signature foreign.sig is not by a key in allowed_signers"
    assert not (events / "foreign").exists()
    missing = s.wait_state("unsigned", "failed")
    assert missing["reason"] == "integrity: signature unsigned.sig not found (sign it: spctl sign)"
    assert not (events / "unsigned").exists()


def test_a_good_signature_runs_and_status_says_signed(world: tuple[Serve, Path]) -> None:
    s, events = world
    ext = s.wait_state("signed", "running")
    assert ext["integrity"] == "signed by alice@example.com"
    assert "integrity: signed by alice@example.com" in s.spctl("status", "signed").stdout
    assert (events / "signed").exists()


# -- the transcripts of docs/pins.md, run as shown -------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "pins.md"
_HASH = re.compile(r"sha256:[0-9a-f]{64}")


def _blocks(kind: str) -> list[list[str]]:
    found = re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.M | re.S)
    return [block.splitlines() for block in found]


def test_the_transcripts_in_docs_pins_md_work_as_shown(tmp_path: Path) -> None:
    (yaml_block,) = _blocks("yaml")
    ext = tmp_path / "extensions"
    (ext / "servers" / "hello").mkdir(parents=True)
    (ext / "servers" / "hello" / "__init__.py").write_text("from .tools import *\n")
    (ext / "servers" / "hello" / "tools.py").write_text("HELLO = 'hello'\n")
    (ext / "servers.yaml").write_text("\n".join(yaml_block) + "\n")
    env = dict(os.environ, PATH=f"{Path(SPCTL).parent}{os.pathsep}{os.environ['PATH']}")
    ran = 0
    for block in _blocks("console"):
        commands: list[tuple[str, list[str]]] = []
        for line in block:
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
        for command, expected in commands:
            out = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert out.stderr == "", (command, out.stderr)
            assert _HASH.sub("sha256:…", out.stdout).splitlines() == expected, command
            ran += 1
    assert ran >= 8
    # and what the page says the supervisor would do: the signed, pinned entry verifies
    result = load_registry(ext, environ={})
    hello = result.registry.get("hello")
    assert hello is not None
    verdict = integrity.check(hello)
    assert (verdict.label, verdict.problem) == ("pinned, signed by alice@example.com", None)
