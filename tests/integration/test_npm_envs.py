"""npm extension environments (DESIGN §9): ``install: npm:NAME@VERSION`` locked and built with
the host's real node and npm from the real npm registry, hosted by a real supervisor, called
through ``spctl call``; ``spctl add npm:…`` and a ``server.json`` with an npm package.

npm's cache is ``.venv/test-cache/npm-cache`` (``NPM_CONFIG_CACHE``), kept between runs, so a
package is downloaded once per machine. The published server is locked and built once for the
module (each test works on a copy). Every test skips when node/npm are missing or the registry
cannot be reached and the cache is empty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    CACHE,
    SPCTL,
    Serve,
    descendants,
    interruptible,
    make_extensions,
    pid_gone,
    serve_fixture,
    wait_for,
)
from tests.integration.test_add import spctl as run

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("npm") is None, reason="npm not on PATH"),
]

PACKAGE = "@modelcontextprotocol/server-everything"
VERSION = "2026.8.31"  # pinned: the one test_published_servers runs too
ENTRY: dict[str, Any] = {
    "name": "everything",
    "type": "local",
    "install": f"npm:{PACKAGE}@{VERSION}",
    "command": ["mcp-server-everything", "stdio"],
    "sandbox": {},  # the default: strict; the env's npm prefix is found from the command
}
SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"


@pytest.fixture(scope="module", autouse=True)
def npm_cache() -> Iterator[Path]:
    cache = CACHE / "npm-cache"
    old = os.environ.get("NPM_CONFIG_CACHE")
    os.environ["NPM_CONFIG_CACHE"] = str(cache)
    try:
        yield cache
    finally:
        if old is None:
            os.environ.pop("NPM_CONFIG_CACHE", None)
        else:
            os.environ["NPM_CONFIG_CACHE"] = old


def skip_if_offline(out: subprocess.CompletedProcess[str]) -> None:
    if out.returncode != 0 and "cannot be reached" in out.stderr:
        pytest.skip(f"the npm registry is not reachable: {out.stderr.strip()}")


def envs_of(root: Path) -> list[str]:
    envs = root / "state" / "envs"
    return sorted(p.name for p in envs.iterdir()) if envs.is_dir() else []


@dataclass(frozen=True)
class Built:
    root: Path
    lock: str
    install: subprocess.CompletedProcess[str]
    envs: list[str]


@pytest.fixture(scope="module")
def built(npm_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("npm-built")
    ext = make_extensions(root, [], [dict(ENTRY)])
    out = run("lock", "everything", "--extensions", str(ext), root=root)
    skip_if_offline(out)
    assert out.returncode == 0, out.stderr
    lock = (ext / "spctl.lock").read_text()
    install = run("install", "--extensions", str(ext), root=root)
    return Built(root, lock, install, envs_of(root))


def copy_of(b: Built, root: Path, *, env: bool) -> Path:
    assert b.install.returncode == 0, b.install.stderr
    ext = root / "extensions"
    shutil.copytree(b.root / "extensions", ext)
    if env:
        shutil.copytree(b.root / "state" / "envs", root / "state" / "envs", symlinks=True)
    return ext


# -- the whole path ---------------------------------------------------------------------------


def test_npm_server_locked_built_served_and_called(tmp_path: Path, built: Built) -> None:
    table = tomllib.loads(built.lock)["extensions"]["everything"]
    assert table["source"] == f"npm:{PACKAGE}@{VERSION}"
    assert table["requirements"] == [f"{PACKAGE}@{VERSION}"]
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", table["node"])
    packages = {p["path"]: p for p in table["packages"]}
    top = packages[f"node_modules/{PACKAGE}"]
    assert top["version"] == VERSION and top["integrity"].startswith("sha512-")
    assert all(p["integrity"].startswith("sha") for p in packages.values())  # every one hashed
    assert built.install.returncode == 0, built.install.stderr
    (name,) = built.envs
    assert name == f"everything-{table['digest'].removeprefix('sha256:')[:12]}"
    env = built.root / "state" / "envs" / name
    assert (env / ".spctl-complete").is_file()
    assert (env / "node_modules" / ".bin" / "mcp-server-everything").exists()
    assert (built.root / "extensions" / "spctl.lock").read_text() == built.lock  # not rewritten
    copy_of(built, tmp_path, env=True)
    with serve_fixture(tmp_path, [], [dict(ENTRY)]) as s:
        s.start()
        s.wait_state("everything", "running", timeout=60)
        out = s.spctl("call", "everything", "echo", "--json", json.dumps({"message": "hi, npm"}))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "Echo: hi, npm"
    assert envs_of(tmp_path) == [name]  # serve used the env that was there


def test_serve_builds_a_missing_npm_env_from_the_lock(tmp_path: Path, built: Built) -> None:
    ext = copy_of(built, tmp_path, env=False)
    lock_before = (ext / "spctl.lock").read_text()
    with serve_fixture(tmp_path, [], [dict(ENTRY)]) as s:
        s.start()
        s.wait_state("everything", "running", timeout=120)
        out = s.spctl("call", "everything", "echo", "--json", json.dumps({"message": "built"}))
        assert out.returncode == 0 and out.stdout.strip() == "Echo: built", out.stderr
    assert envs_of(tmp_path) == built.envs  # the same content-addressed env, rebuilt
    assert (ext / "spctl.lock").read_text() == lock_before


def test_offline_install_from_npm_cache(tmp_path: Path, built: Built) -> None:
    ext = copy_of(built, tmp_path, env=False)
    dead = {"NPM_CONFIG_REGISTRY": "http://127.0.0.1:9/", "NPM_CONFIG_FETCH_RETRIES": "0"}
    out = run("install", "--extensions", str(ext), root=tmp_path, env=dead)
    assert out.returncode == 0, out.stderr  # every tarball from the cache, by its integrity
    assert envs_of(tmp_path) == built.envs
    # an empty cache cannot satisfy it: said so, nothing built
    empty = {**dead, "NPM_CONFIG_CACHE": str(tmp_path / "empty-cache")}
    other = tmp_path / "other"
    ext2 = copy_of(built, other, env=False)
    out = run("install", "--extensions", str(ext2), root=other, env=empty)
    assert out.returncode == 1
    assert "the npm registry cannot be reached" in out.stderr, out.stderr
    assert "npm's cache cannot satisfy it offline" in out.stderr
    assert [p for p in envs_of(other) if not p.startswith(".tmp-")] == []


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("install", "words"),
    [
        (
            "npm:no-such-package-spctl-xyz@1.0.0",
            ["no-such-package-spctl-xyz", "could not be found"],
        ),
        (f"npm:{PACKAGE}@9999.1.1", [f"{PACKAGE}@9999.1.1", "No matching version"]),
    ],
)
def test_unknown_package_or_version_is_refused(
    tmp_path: Path, install: str, words: list[str]
) -> None:
    ext = make_extensions(tmp_path, [], [dict(ENTRY, install=install)])
    out = run("lock", "everything", "--extensions", str(ext), root=tmp_path)
    skip_if_offline(out)
    assert out.returncode == 1
    assert f"everything: cannot lock {install}" in out.stderr, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr
    assert not (ext / "spctl.lock").exists() and envs_of(tmp_path) == []


def test_no_node_or_npm_on_path(tmp_path: Path, built: Built) -> None:
    ext = copy_of(built, tmp_path, env=False)
    bare = {"PATH": str(tmp_path / "empty-bin")}
    out = run("install", "--extensions", str(ext), root=tmp_path, env=bare)
    assert out.returncode == 1
    assert "everything: cannot build the environment: node and npm not found on PATH" in (
        out.stderr
    ), out.stderr
    out = run("lock", "--extensions", str(ext), root=tmp_path, env=bare)
    assert out.returncode == 1 and "node and npm not found on PATH" in out.stderr
    assert envs_of(tmp_path) == []


def test_lock_that_does_not_match_the_entry(tmp_path: Path, built: Built) -> None:
    ext = copy_of(built, tmp_path, env=False)
    make_extensions(tmp_path, [], [dict(ENTRY, install=f"npm:{PACKAGE}@2026.1.26")])
    out = run("install", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 1
    assert "[extensions.everything]: locked for requirements" in out.stderr, out.stderr
    assert f"{PACKAGE}@2026.1.26" in out.stderr and "run `spctl lock everything`" in out.stderr


def test_lock_edited_by_hand(tmp_path: Path, built: Built) -> None:
    from supervisor.install.envlock import npm_digest_of
    from supervisor.install.npm import parse_packages

    ext = copy_of(built, tmp_path, env=False)
    lock = ext / "spctl.lock"
    text = lock.read_text()
    table = tomllib.loads(text)["extensions"]["everything"]
    top = next(p for p in table["packages"] if p["path"] == f"node_modules/{PACKAGE}")
    forged = "sha512-" + "A" * 86 + "=="
    lock.write_text(text.replace(top["integrity"], forged))
    out = run("install", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 1
    assert "does not match its packages (edited by hand?)" in out.stderr, out.stderr
    # the digest recomputed too: npm itself refuses the tarball that does not match its hash
    edited = tomllib.loads(lock.read_text())["extensions"]["everything"]
    digest = npm_digest_of(edited["requirements"], parse_packages(edited["packages"], "x"))
    lock.write_text(lock.read_text().replace(table["digest"], digest))
    out = run("install", "--extensions", str(ext), root=tmp_path)
    skip_if_offline(out)
    assert out.returncode == 1
    assert "everything: cannot build the environment" in out.stderr, out.stderr
    assert "integrity" in out.stderr.lower(), out.stderr
    assert [p for p in envs_of(tmp_path) if not p.startswith(".tmp-")] == []


# -- spctl add ---------------------------------------------------------------------------------


def test_add_npm_into_a_running_supervisor_then_call_it(tmp_path: Path, built: Built) -> None:
    with serve_fixture(tmp_path, [], []) as s:
        s.start()
        out = s.spctl("add", f"npm:{PACKAGE}", "--yes", "-e", str(s.extensions), timeout=240)
        skip_if_offline(out)
        assert out.returncode == 0, out.stderr
        assert f"latest version: {PACKAGE}@" in out.stderr  # the newest, pinned exactly
        assert "/node_modules/.bin/mcp-server-everything" in out.stdout
        assert "reloaded the running supervisor (everything)" in out.stdout
        text = (s.extensions / "servers.yaml").read_text()
        version = re.search(rf"install: npm:{re.escape(PACKAGE)}@(\S+)", text)
        assert version is not None, text
        assert "command: [mcp-server-everything]" in text  # its one bin (stdio by default)
        lock = tomllib.loads((s.extensions / "spctl.lock").read_text())
        assert lock["extensions"]["everything"]["source"] == f"npm:{PACKAGE}@{version.group(1)}"
        s.wait_state("everything", "running", timeout=60)
        out = s.spctl("call", "everything", "echo", "--json", json.dumps({"message": "added"}))
        assert out.returncode == 0 and out.stdout.strip() == "Echo: added", out.stderr


def test_add_server_json_with_an_npm_package(tmp_path: Path, built: Built) -> None:
    ext = make_extensions(tmp_path, [], [])
    doc = {
        "$schema": SCHEMA,
        "name": "io.github.modelcontextprotocol/everything",
        "description": "the reference server",
        "version": VERSION,
        "packages": [
            {
                "registryType": "npm",
                "identifier": PACKAGE,
                "version": VERSION,
                "runtimeHint": "npx",
                "transport": {"type": "stdio"},
                "packageArguments": [{"type": "positional", "value": "stdio"}],
            }
        ],
    }
    source = tmp_path / "server.json"
    source.write_text(json.dumps(doc))
    out = run("add", str(source), "--yes", "-e", str(ext), root=tmp_path)
    skip_if_offline(out)
    assert out.returncode == 0, out.stderr
    text = (ext / "servers.yaml").read_text()
    assert f"install: npm:{PACKAGE}@{VERSION}" in text
    assert "command: [mcp-server-everything, stdio]" in text
    assert f"io.github.modelcontextprotocol/everything {VERSION}" in text  # provenance
    origin = tomllib.loads((ext / "spctl.lock").read_text())["origins"]["everything"]
    assert origin["source"] == str(source) and origin["version"] == VERSION
    assert origin["name"] == "io.github.modelcontextprotocol/everything"
    assert envs_of(tmp_path) == built.envs  # the same lock, so the same env digest
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")  # the servers.yaml add wrote
    try:
        s.start()
        s.wait_state("everything", "running", timeout=60)
        out = s.spctl("call", "everything", "echo", "--json", json.dumps({"message": "json"}))
        assert out.returncode == 0 and out.stdout.strip() == "Echo: json", out.stderr
        # where it came from: spctl status EXT
        out = s.spctl("status", "everything")
        assert out.returncode == 0, out.stderr
        origin = re.search(r"^origin: (.*)$", out.stdout, re.MULTILINE)
        assert origin is not None, out.stdout
        assert origin.group(1).startswith(
            f"io.github.modelcontextprotocol/everything {VERSION} (spctl add {source}, 20"
        )
        assert origin.group(1).endswith(f"; install: npm:{PACKAGE}@{VERSION}")
        out = s.spctl("remove", "everything", "--yes", "-e", str(ext))
        assert out.returncode == 0, out.stderr
    finally:
        s.kill()
    lock = tomllib.loads((ext / "spctl.lock").read_text())
    assert "everything" not in lock.get("origins", {}) and "everything" not in lock.get(
        "extensions", {}
    )


def test_add_bad_npm_sources_change_nothing(tmp_path: Path) -> None:
    ext = make_extensions(tmp_path, [], [])
    before = (ext / "servers.yaml").read_text()
    for source, words in [
        ("npm:Bad Name", ["expected npm:NAME or npm:NAME@VERSION"]),
        (f"npm:{PACKAGE}@^1.0.0", ["is not an exact version"]),
        ("npm:no-such-package-spctl-xyz", ["could not be found"]),
    ]:
        out = run("add", source, "--yes", "-e", str(ext), root=tmp_path)
        skip_if_offline(out)
        assert out.returncode == 1, out.stdout
        assert "nothing was changed" in out.stderr
        for word in words:
            assert word in out.stderr, out.stderr
    assert (ext / "servers.yaml").read_text() == before
    assert not (ext / "spctl.lock").exists() and envs_of(tmp_path) == []


def test_ctrl_c_during_an_npm_build_leaves_nothing(tmp_path: Path, built: Built) -> None:
    ext = copy_of(built, tmp_path, env=False)
    env = {
        **os.environ,
        "STATE_DIRECTORY": str(tmp_path / "state"),
        "NPM_CONFIG_CACHE": str(tmp_path / "cold-cache"),  # a cold cache: npm ci downloads
    }
    proc = subprocess.Popen(
        interruptible([SPCTL, "install", "--extensions", str(ext)]),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    envs = tmp_path / "state" / "envs"
    try:
        wait_for(
            lambda: proc.poll() is not None or any(envs.glob(".tmp-everything-*/env/node_modules")),
            120,
            "npm ci to start writing node_modules",
        )
        if proc.poll() is not None:
            out, err = proc.communicate()
            skip_if_offline(subprocess.CompletedProcess([], proc.returncode, out, err))
            pytest.fail(f"install ended before its build could be interrupted: {out}{err}")
        npm = descendants(proc.pid)
        assert npm, "no npm child to interrupt"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, err
    assert envs_of(tmp_path) == []  # no env, not even its temp dir
    wait_for(lambda: all(pid_gone(pid) for pid in npm), 10, "npm to be gone")
