"""Extension environments (DESIGN §9): real uv, real PyPI, real supervisors.

One uv cache is shared by the whole module (``UV_CACHE_DIR``), so each package is downloaded
once per run. Every test skips when PyPI cannot be reached and the cache is empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    SPCTL,
    interruptible,
    make_extensions,
    serve_fixture,
    server_entry,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

TIME = "mcp-server-time==2026.10.19"
TIME_ENTRY: dict[str, Any] = {
    "name": "time",
    "type": "local",
    "install": f"pypi:{TIME}",
    "command": ["mcp-server-time", "--local-timezone=UTC"],
    "sandbox": {},  # the default: strict, outbound
}
NEEDS_DEP = '''\
"""A local MCP server extension whose tool answers with a function of its dependency."""

import idna

metadata = {"name": "needs-dep", "version": "1.0.0", "capabilities": ["tools"]}
TOOLS = [{"name": "encode", "description": "IDNA-encode a name",
          "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}]


def create_handler(config):
    def handle(method, params):
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            name = params["arguments"]["name"]
            text = idna.encode(name).decode() + " idna " + idna.__version__
            return {"content": [{"type": "text", "text": text}]}
        raise KeyError(method)

    return handle
'''


@pytest.fixture(scope="module", autouse=True)
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("uv-cache")
    old = os.environ.get("UV_CACHE_DIR")
    os.environ["UV_CACHE_DIR"] = str(cache)
    try:
        yield cache
    finally:
        if old is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = old


def run(*args: str, root: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATE_DIRECTORY": str(root / "state")}
    return subprocess.run(
        [SPCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def lock_or_skip(root: Path, ext: Path, name: str) -> None:
    out = run("lock", name, "--extensions", str(ext), root=root)
    if out.returncode != 0 and "cannot be reached" in out.stderr:
        pytest.skip(f"PyPI not reachable: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr


def envs_of(root: Path) -> list[str]:
    envs = root / "state" / "envs"
    return sorted(p.name for p in envs.iterdir()) if envs.is_dir() else []


@dataclass(frozen=True)
class Built:
    """TIME_ENTRY locked and built once for the module (each test works on a copy)."""

    root: Path
    lock: str  # spctl.lock as `spctl lock time` wrote it
    install: subprocess.CompletedProcess[str]  # `spctl install` of that lock
    lock_after: str  # spctl.lock after the install
    envs: list[str]  # what the install left under state/envs


@pytest.fixture(scope="module")
def time_built(uv_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("time-built")
    ext = make_extensions(root, [], [dict(TIME_ENTRY)])
    lock_or_skip(root, ext, "time")  # fills the module's uv cache
    lock = (ext / "spctl.lock").read_text()
    out = run("install", "--extensions", str(ext), root=root)
    return Built(root, lock, out, (ext / "spctl.lock").read_text(), envs_of(root))


def copy_of(built: Built, root: Path, *, env: bool) -> Path:
    """``root/extensions`` as locked for TIME_ENTRY, and (``env``) its built environment in
    ``root/state/envs``; returns the extensions directory."""
    assert built.install.returncode == 0, built.install.stderr
    ext = root / "extensions"
    shutil.copytree(built.root / "extensions", ext)
    if env:
        shutil.copytree(built.root / "state" / "envs", root / "state" / "envs", symlinks=True)
    return ext


def test_install_pypi_server_serves_and_answers(tmp_path: Path, time_built: Built) -> None:
    lock = time_built.lock
    assert '[extensions.time]\nsource = "pypi:mcp-server-time==2026.10.19"' in lock
    assert 'name = "msgpack"' in lock and "sha256:" in lock
    # spctl install builds exactly the lock, and leaves it as it was
    out = time_built.install
    assert out.returncode == 0, out.stderr
    (env_name,) = time_built.envs
    assert env_name.startswith("time-") and time_built.lock_after == lock
    env = time_built.root / "state" / "envs" / env_name

    def probe(code: str) -> subprocess.CompletedProcess[str]:
        python = str(env / "bin" / "python")
        return subprocess.run(
            [python, "-P", "-c", code], capture_output=True, text=True, check=False
        )

    assert probe("import worker.host, msgpack").returncode == 0  # the worker shim: importable
    no_spctl = probe("import supervisor")  # the rest of spctl: not
    assert no_spctl.returncode == 1 and "No module named 'supervisor'" in no_spctl.stderr
    copy_of(time_built, tmp_path, env=True)
    with serve_fixture(tmp_path, [], [dict(TIME_ENTRY)]) as s:
        s.start()
        s.wait_state("time", "running", timeout=60)
        out = s.spctl("call", "time", "get_current_time", "--arg", "timezone=UTC")
        assert out.returncode == 0, out.stderr
        assert '"timezone": "UTC"' in out.stdout
    assert envs_of(tmp_path) == [env_name]  # serve used the env that was there


def test_an_env_deleted_under_a_running_supervisor_is_rebuilt_at_the_next_start(
    tmp_path: Path, time_built: Built
) -> None:
    """The issue's bad input: the env directory removed while its worker runs. The worker goes
    on (its files are open); the next start finds the env missing and builds it again from the
    lock (the module's uv cache), and the server answers."""
    copy_of(time_built, tmp_path, env=True)
    (env_name,) = time_built.envs
    env = tmp_path / "state" / "envs" / env_name
    with serve_fixture(tmp_path, [], [dict(TIME_ENTRY)]) as s:
        s.start()
        first = s.wait_state("time", "running", timeout=60)
        shutil.rmtree(env)
        out = s.spctl("restart", "time")
        assert out.returncode == 0, out.stderr
        wait_for(
            lambda: (e := s.ext("time"))["state"] == "running" and e["pid"] != first["pid"],
            120,
            "time rebuilt and running again",
        )
        assert (env / "bin").is_dir()
        out = s.spctl("call", "time", "get_current_time", "--arg", "timezone=UTC")
        assert out.returncode == 0, out.stderr
        assert '"timezone": "UTC"' in out.stdout
    assert envs_of(tmp_path) == [env_name]  # the same lock: the same env, rebuilt in place


def test_requirements_local_package_imports_its_dependency(tmp_path: Path) -> None:
    entry = {
        "name": "needs-dep",
        "type": "local",
        "path": "./servers/needs_dep",
        "requirements": ["idna==3.10"],
    }
    ext = make_extensions(tmp_path, [], [entry])
    (ext / "servers" / "needs_dep").mkdir()
    (ext / "servers" / "needs_dep" / "__init__.py").write_text(NEEDS_DEP)
    # No lock entry: serve locks it on first start (and writes spctl.lock)
    with serve_fixture(tmp_path, [], [entry]) as s:
        s.start()
        s.wait_state("needs-dep", "running", timeout=120)
        out = s.spctl("call", "needs-dep", "encode", "--arg", "name=bücher.example")
        assert out.returncode == 0, out.stderr
        assert "xn--bcher-kva.example idna 3.10" in out.stdout
    assert 'name = "idna"\nversion = "3.10"' in (ext / "spctl.lock").read_text()


def test_version_that_does_not_exist_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    entry = dict(TIME_ENTRY, install="pypi:mcp-server-time==1999.1.1")
    ext = make_extensions(tmp_path, [], [entry])
    out = run("lock", "time", "--extensions", str(ext), root=tmp_path)
    if "cannot be reached" in out.stderr:
        pytest.skip("PyPI not reachable")
    assert out.returncode == 1
    assert "time: cannot lock" in out.stderr and "mcp-server-time==1999.1.1" in out.stderr
    assert not (ext / "spctl.lock").exists() and envs_of(tmp_path) == []


def test_unresolvable_requirements_fail_the_extension_only(tmp_path: Path) -> None:
    bad = {
        "name": "bad",
        "type": "local",
        "path": "./servers/needs_dep",
        "requirements": ["idna==3.10", "idna<3"],
    }
    ext = make_extensions(tmp_path, [], [bad])
    (ext / "servers" / "needs_dep").mkdir()
    (ext / "servers" / "needs_dep" / "__init__.py").write_text(NEEDS_DEP)
    with serve_fixture(tmp_path, [], [bad]) as s:
        s.start()
        failed = s.wait_state("bad", "failed", timeout=120)
        assert "environment: bad: cannot lock" in failed["reason"] + str(failed["last_exit"])
        assert "idna" in str(failed["last_exit"])
    assert not (ext / "spctl.lock").exists() and envs_of(tmp_path) == []


def test_lock_mismatch_and_hand_edited_lock_are_errors(tmp_path: Path, time_built: Built) -> None:
    ext = copy_of(time_built, tmp_path, env=False)
    lock = ext / "spctl.lock"
    good = lock.read_text()
    # the entry changed: requirements differ from the lock
    servers = yaml.safe_load((ext / "servers.yaml").read_text())
    servers["servers"][0]["install"] = "pypi:mcp-server-time==2026.10.10"
    (ext / "servers.yaml").write_text(yaml.safe_dump(servers))
    out = run("install", "time", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 1
    assert "locked for requirements ['mcp-server-time==2026.10.19']" in out.stderr
    assert "run `spctl lock time`" in out.stderr
    servers["servers"][0]["install"] = TIME_ENTRY["install"]
    (ext / "servers.yaml").write_text(yaml.safe_dump(servers))
    # a version edited by hand: the digest no longer matches
    edited = good.replace('name = "tzdata"\nversion = "', 'name = "tzdata"\nversion = "1')
    assert edited != good
    lock.write_text(edited)
    out = run("install", "time", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 1
    assert "does not match its packages (edited by hand?)" in out.stderr
    assert envs_of(tmp_path) == [] and lock.read_text() == edited


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    ext = tmp_path / "extensions"
    ext.mkdir()
    (ext / "servers.yaml").write_text(
        textwrap.dedent(
            """\
            servers:
              - name: a
                type: local
                install: pypi:mcp-server-time
                command: [mcp-server-time]
              - name: b
                type: local
                path: ./b.py
                requirements: ["not a requirement ==="]
              - name: c
                type: local
                install: pypi:x==1
            """
        )
    )
    (ext / "b.py").write_text("")
    out = run("validate", "--extensions", str(ext), "--json", root=tmp_path)
    assert out.returncode == 1
    errors = {(e["line"], e["field"]): e["message"] for e in json.loads(out.stdout)["errors"]}
    assert "expected pypi:NAME==VERSION" in errors[(4, "servers[0].install")]
    assert "not a valid PEP 508 requirement" in errors[(9, "servers[1].requirements[0]")]
    assert "needs command:" in errors[(12, "servers[2].install")]


MCP_VERSION = '''\
"""Answers with the version of the `mcp` distribution its environment holds."""

metadata = {"name": "mcp-version", "version": "1.0.0", "capabilities": ["tools"]}
TOOLS = [{"name": "version", "description": "mcp's version",
          "inputSchema": {"type": "object", "properties": {}}}]


def create_handler(config):
    import mcp  # importable: its environment has it

    def handle(method, params):
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            from importlib.metadata import version

            text = "mcp " + version("mcp") + " " + mcp.__name__
            return {"content": [{"type": "text", "text": text}]}
        raise KeyError(method)

    return handle
'''


@pytest.mark.skipif(
    os.environ.get("SPCTL_SLOW_TESTS") != "1",
    reason="builds two SDK environments (~60 packages, minutes on a cold cache): "
    "set SPCTL_SLOW_TESTS=1 to run it (kept out of make test for CI's 15 minutes)",
)
def test_mcp_1_and_mcp_2_side_by_side(tmp_path: Path) -> None:
    entries = [
        {
            "name": "old",
            "type": "local",
            "path": "./servers/mcp_version",
            "requirements": ["mcp==1.30.0"],
            "startTimeout": "120s",  # imports the SDK: slow on a loaded 2-core machine
        },
        {
            "name": "new",
            "type": "local",
            "path": "./servers/mcp_version",
            "requirements": ["mcp>=2,<3"],
            "startTimeout": "120s",
        },
    ]
    ext = make_extensions(tmp_path, [], entries)
    (ext / "servers" / "mcp_version").mkdir()
    (ext / "servers" / "mcp_version" / "__init__.py").write_text(MCP_VERSION)
    lock_or_skip(tmp_path, ext, "old")
    lock_or_skip(tmp_path, ext, "new")
    with serve_fixture(tmp_path, [], entries) as s:
        s.start()
        s.wait_state("old", "running", timeout=180)
        s.wait_state("new", "running", timeout=180)
        old = s.spctl("call", "old", "version")
        new = s.spctl("call", "new", "version")
        assert old.returncode == 0 and new.returncode == 0, (
            old,
            new,
            s.log_path.read_text()[-3000:],
        )
        assert "mcp 1.30.0 mcp" in old.stdout
        assert "mcp 2." in new.stdout
    assert len(envs_of(tmp_path)) == 2


def test_upgrade_builds_beside_and_gc_removes_the_unused(tmp_path: Path, time_built: Built) -> None:
    ext = copy_of(time_built, tmp_path, env=True)  # locked and built
    (first,) = envs_of(tmp_path)
    servers = yaml.safe_load((ext / "servers.yaml").read_text())
    servers["servers"][0]["install"] = "pypi:mcp-server-time==2026.10.10"
    (ext / "servers.yaml").write_text(yaml.safe_dump(servers))
    out = run("upgrade", "time", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 0, out.stderr
    assert 'version = "2026.10.10"' in (ext / "spctl.lock").read_text()
    assert len(envs_of(tmp_path)) == 2 and first in envs_of(tmp_path)  # built beside
    out = run("gc", "--dry-run", "--extensions", str(ext), root=tmp_path)
    assert (
        out.returncode == 0 and f"would remove {tmp_path / 'state' / 'envs' / first}" in out.stdout
    )
    assert len(envs_of(tmp_path)) == 2
    out = run("gc", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 0, out.stderr
    (second,) = envs_of(tmp_path)
    assert second != first
    assert "nothing to remove" in run("gc", "--extensions", str(ext), root=tmp_path).stdout


def test_offline_builds_from_the_cache_or_says_it_cannot(tmp_path: Path, time_built: Built) -> None:
    ext = copy_of(time_built, tmp_path, env=False)  # its lock and install filled the uv cache
    no_network = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    no_network["UV_HTTP_RETRIES"] = "0"  # refused at once: uv's retries only cost time here
    env = {**os.environ, **no_network, "STATE_DIRECTORY": str(tmp_path / "offline")}
    argv = interruptible([SPCTL, "install", "time", "--extensions", str(ext)])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr  # from uv's cache alone
    assert len(list((tmp_path / "offline" / "envs").iterdir())) == 1
    env = {
        **env,
        "UV_CACHE_DIR": str(tmp_path / "empty-cache"),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 1
    assert "the package index cannot be reached" in out.stderr
    assert "uv's cache cannot satisfy it offline" in out.stderr
    assert envs_of(tmp_path) == []  # the failed build left nothing


def test_installing_is_shown_and_blocks_no_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A "proxy" that completes the TCP handshake (the kernel's backlog) and never answers: uv
    # waits on it for as long as the test needs, so the build is seen under way.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    proxy = f"http://127.0.0.1:{hang.getsockname()[1]}"
    for var in ("HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(var, proxy)
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "300")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-cache"))
    slow = {"name": "slow", "type": "local", "path": "./servers/needs_dep"}
    slow["requirements"] = ["idna==3.10"]
    entries = [slow, server_entry("echo", "mcp_echo")]
    ext = make_extensions(tmp_path, [], entries)
    (ext / "servers" / "needs_dep").mkdir()
    (ext / "servers" / "needs_dep" / "__init__.py").write_text(NEEDS_DEP)
    try:
        with serve_fixture(tmp_path, [], entries) as s:
            s.start()
            s.wait_state("slow", "installing", timeout=30)

            def resolving() -> bool:
                e = s.ext("slow")
                return e["state"] == "installing" and "resolving idna==3.10" in e["reason"]

            wait_for(resolving, 30, "slow to show its build's progress")
            s.wait_state("echo", "running", timeout=30)  # the build holds no one up
            status = s.spctl("status")
            assert "installing" in status.stdout, status.stdout
            assert s.ext("slow")["state"] == "installing"
    finally:
        hang.close()
    assert not (ext / "spctl.lock").exists()


def test_ctrl_c_during_a_build_leaves_nothing_used(tmp_path: Path, time_built: Built) -> None:
    ext = copy_of(time_built, tmp_path, env=False)
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    proxy = f"http://127.0.0.1:{hang.getsockname()[1]}"
    env = {
        **os.environ,
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "UV_HTTP_TIMEOUT": "300",
        "UV_CACHE_DIR": str(tmp_path / "empty-cache"),  # so the install must download: it hangs
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    envs = tmp_path / "state" / "envs"
    try:
        proc = subprocess.Popen(
            interruptible([SPCTL, "install", "time", "--extensions", str(ext)]),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: any(envs.glob(".tmp-time-*/env/pyvenv.cfg")), 60, "the build under way")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        hang.close()
    assert proc.returncode != 0, err
    assert envs_of(tmp_path) == []  # its temp dir is gone; nothing looks built
    out = run("install", "time", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(envs_of(tmp_path)) == 1


def test_a_wrong_hash_fails_the_build_and_keeps_the_old_env(
    tmp_path: Path, time_built: Built
) -> None:
    from supervisor.install.envlock import digest_of
    from supervisor.install.lockfile import read_lock, update_lock
    from supervisor.install.uv import LockedPackage

    ext = copy_of(time_built, tmp_path, env=True)  # locked and built
    (old,) = envs_of(tmp_path)
    table = read_lock(ext)["extensions"]["time"]
    # A hand edit that keeps the lock consistent (digest recomputed) but lies about a hash
    for package in table["packages"]:
        if package["name"] == "tzdata":
            package["hashes"] = ["sha256:" + "0" * 64]
    packages = [
        LockedPackage(p["name"], p["version"], tuple(p["hashes"])) for p in table["packages"]
    ]
    table["digest"] = digest_of(table["python"], packages)
    update_lock(ext, "extensions", "time", table)
    out = run("install", "time", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 1
    assert "time: cannot build the environment" in out.stderr and "tzdata" in out.stderr
    assert envs_of(tmp_path) == [old]  # the old env is as it was; nothing new looks built


# -- install: a wheel inside extensions/ ------------------------------------------------------

TINY_SERVER = '''\
"""A stdio MCP server in a wheel of its own (JSON lines, standard library and idna)."""

import hashlib
import json
import sys

import idna


def main():
    for line in sys.stdin:
        msg = json.loads(line)
        if "id" not in msg:
            continue
        method, result = msg["method"], None
        if method == "initialize":
            result = {"protocolVersion": msg["params"]["protocolVersion"],
                      "capabilities": {"tools": {}},
                      "serverInfo": {"name": "tiny", "version": "1.0.0"}}
        elif method == "tools/list":
            result = {"tools": [{"name": "encode", "inputSchema": {"type": "object"}}]}
        elif method == "tools/call":
            name = msg["params"]["arguments"]["name"]
            text = idna.encode(name).decode() + " " + VERSION
            result = {"content": [{"type": "text", "text": text}]}
        reply = {"jsonrpc": "2.0", "id": msg["id"]}
        if result is None:
            reply["error"] = {"code": -32601, "message": method}
        else:
            reply["result"] = result
        sys.stdout.write(json.dumps(reply) + "\\n")
        sys.stdout.flush()
'''
WHEEL = "dist/tiny_mcp-1.0.0-py3-none-any.whl"


def write_wheel(path: Path, version_text: str) -> None:
    """A real wheel (zip, METADATA, entry point, RECORD) of the package ``tiny_mcp``."""
    import base64
    import zipfile

    info = "tiny_mcp-1.0.0.dist-info"
    files = {
        "tiny_mcp/__init__.py": (TINY_SERVER + f"\nVERSION = {version_text!r}\n").encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: tiny-mcp\nVersion: 1.0.0\n"
        b"Requires-Dist: idna==3.10\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{info}/entry_points.txt": b"[console_scripts]\ntiny-mcp = tiny_mcp:main\n",
    }
    records = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0)), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{name},sha256={digest.decode()},{len(data)}")
        records.append(f"{info}/RECORD,,")
        z.writestr(zipfile.ZipInfo(f"{info}/RECORD", (2026, 1, 1, 0, 0, 0)), "\n".join(records))


def test_install_a_wheel_inside_extensions(tmp_path: Path) -> None:
    entry = {"name": "tiny", "type": "local", "install": f"./{WHEEL}", "command": ["tiny-mcp"]}
    ext = make_extensions(tmp_path, [], [entry])
    write_wheel(ext / WHEEL, "first")
    lock_or_skip(tmp_path, ext, "tiny")
    lock = (ext / "spctl.lock").read_text()
    digest = "sha256:" + hashlib.sha256((ext / WHEEL).read_bytes()).hexdigest()
    assert f'name = "tiny-mcp"\nversion = "1.0.0"\nfile = "{WHEEL}"\nhashes = ["{digest}"]' in lock
    assert 'name = "idna"\nversion = "3.10"' in lock  # its dependency, locked with hashes
    with serve_fixture(tmp_path, [], [entry]) as s:
        s.start()
        s.wait_state("tiny", "running", timeout=120)
        out = s.spctl("call", "tiny", "encode", "--arg", "name=bücher.example")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "xn--bcher-kva.example first"
    (env_name,) = envs_of(tmp_path)
    # the wheel replaced by another build of the same version: the lock no longer matches
    write_wheel(ext / WHEEL, "second")
    out = run("install", "tiny", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 1
    assert f"./{WHEEL} has changed since it was locked" in out.stderr, out.stderr
    assert "run `spctl lock tiny`" in out.stderr
    lock_or_skip(tmp_path, ext, "tiny")  # re-locked: a new env beside the old one
    out = run("install", "tiny", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(envs_of(tmp_path)) == 2 and env_name in envs_of(tmp_path)


def test_an_archive_path_outside_extensions_is_a_config_error(tmp_path: Path) -> None:
    write_wheel(tmp_path / WHEEL, "outside")
    entry = {"name": "tiny", "type": "local", "install": f"../{WHEEL}", "command": ["tiny-mcp"]}
    ext = make_extensions(tmp_path, [], [entry])
    out = run("validate", "--extensions", str(ext), root=tmp_path)
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert re.search(r"servers\.yaml:\d+:\d+: servers\[0\]\.install: resolves outside", said), said


def test_install_an_sdist_inside_extensions(tmp_path: Path) -> None:
    import tarfile

    entry = {
        "name": "sd",
        "type": "local",
        "install": "./dist/tiny_sd-1.0.0.tar.gz",
        "command": ["tiny-sd"],
    }
    ext = make_extensions(tmp_path, [], [entry])
    src = tmp_path / "tiny_sd-1.0.0"
    (src / "tiny_sd").mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "tiny-sd"
            version = "1.0.0"
            dependencies = ["idna==3.10"]
            [project.scripts]
            tiny-sd = "tiny_sd:main"
            """
        )
    )
    (src / "tiny_sd" / "__init__.py").write_text(
        "import idna\n\ndef main():\n    print('sdist', idna.__version__)\n"
    )
    (ext / "dist").mkdir()
    with tarfile.open(ext / "dist" / "tiny_sd-1.0.0.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=src.name)
    lock_or_skip(tmp_path, ext, "sd")
    assert 'file = "dist/tiny_sd-1.0.0.tar.gz"' in (ext / "spctl.lock").read_text()
    out = run("install", "sd", "--extensions", str(ext), root=tmp_path)
    assert out.returncode == 0, out.stderr
    (env_name,) = envs_of(tmp_path)
    script = tmp_path / "state" / "envs" / env_name / "bin" / "tiny-sd"
    said = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    assert said.stdout.strip() == "sdist 3.10", said.stderr
