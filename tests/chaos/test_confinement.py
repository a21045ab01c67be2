"""Confinement (#13): a hostile extension reaches nothing that is not its own — and the same
fixture with the sandbox off reaches what the host allows, so these prove the sandbox, not the
host. Real supervisors, real workers, Landlock of this kernel (skipped, saying why, without)."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    FIXTURES,
    Serve,
    make_extensions,
    module_entry,
    server_entry,
    wait_for,
)
from worker.sandbox import abi_version

ABI = abi_version()
pytestmark = pytest.mark.skipif(
    ABI < 6, reason=f"this kernel's Landlock ABI is {ABI}: the hostile tests need ABI >= 6"
)

SECRET = "victim-token-not-for-others"
NEVER = {"policy": "never"}


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _hostile(name: str, sandbox: Any) -> dict[str, Any]:
    return module_entry(name, "hostile", sandbox=sandbox, restart=NEVER)


def _start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hostiles: list[dict[str, Any]]
) -> Serve:
    victim = module_entry("victim", "ok_daemon", env={"OTHER_SECRET": "${VICTIM_TOKEN}"})
    ext = make_extensions(tmp_path, [victim, *hostiles])
    monkeypatch.setenv("VICTIM_TOKEN", SECRET)  # as systemd's EnvironmentFile= would
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock").start()
    for entry in (victim, *hostiles):
        s.wait_state(entry["name"], "running")
    return s


CGROUP_PROCS = next(
    (p for p in ("/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/cgroup.procs")
     if os.path.exists(p)),
    None,
)  # fmt: skip


def _probe(s: Serve, name: str, port: int, **extra: Any) -> dict[str, Any]:
    """Hand the hostile extension its targets and wait for its report."""
    state = s.root / "state" / "extensions"
    (state / "victim" / "private.txt").write_text("the victim's own state\n")
    args = {
        "other_state": str(state / "victim" / "private.txt"),
        "registry": str(s.extensions / "modules.yaml"),
        "outside": str(s.root / f"outside-{name}.txt"),
        "secret": "OTHER_SECRET",
        "supervisor_secret": "VICTIM_TOKEN",
        "supervisor": s.proc.pid if s.proc else 0,
        "sibling": s.ext("victim")["pid"],
        "port": port,
        "control": str(s.socket),
        **extra,
    }
    (state / name / "go.json").write_text(json.dumps(args))
    report = state / name / "report.json"
    text = wait_for(lambda: report.exists() and report.read_text(), 30, f"{name}'s report")
    result: dict[str, Any] = json.loads(text)
    return result


DENIED_FS = {
    "read_other_state": "EACCES",
    "read_registry": "EACCES",
    "write_own_package": "EACCES",
    "write_outside": "EACCES",
    "list_root": "EACCES",
    "supervisor_environ": "EACCES",
}


def test_a_confined_extension_reaches_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: int
) -> None:
    hostiles = [
        _hostile("hostile", {"network": "outbound"}),
        _hostile("offline", {"network": "none"}),
    ]
    s = _start(tmp_path, monkeypatch, hostiles)
    try:
        victim_pid = s.ext("victim")["pid"]
        more = {"cgroup_procs": CGROUP_PROCS} if CGROUP_PROCS else {}
        out = _probe(s, "hostile", listener, **more)
        expected = {
            **DENIED_FS,
            "write_state": "ok",
            "write_tmpdir": "ok",
            "env_secret": "absent",
            "tcp_connect": "ok",  # outbound: connect, no bind
            "tcp_bind": "EACCES",
            "kill_sibling": "EPERM",
            "control_socket": "refused",  # its pid is in a worker's tree, whatever its uid
            **({"move_cgroup": "EACCES"} if CGROUP_PROCS else {}),  # it cannot leave its cgroup
        }
        for who in ("self", "child"):  # what it starts is confined the same way
            got = {k: v for k, v in out[who].items() if k in expected}
            want = {k: v for k, v in expected.items() if who == "self" or k != "kill_sibling"}
            assert got == want, who
        offline = _probe(s, "offline", listener)
        for who in ("self", "child"):
            assert offline[who]["tcp_connect"] == "EACCES", who
            assert offline[who]["tcp_bind"] == "EACCES", who
        # nobody died: the victim kept its pid, the hostile ones still run
        assert s.ext("victim")["pid"] == victim_pid
        assert s.ext("hostile")["state"] == "running"
        shown = s.spctl("status", "hostile")
        assert f"sandbox: landlock ABI {ABI}, fs strict, network outbound" in shown.stdout
    finally:
        s.stop()


def test_the_same_extension_unconfined_reaches_what_the_host_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: int
) -> None:
    """Proof that the denials above are the sandbox's: as root with the sandbox off, each
    succeeds — except another entry's secret, which the clean environment never gives it."""
    s = _start(
        tmp_path, monkeypatch, [_hostile("hostile", {"filesystem": "off", "network": "any"})]
    )
    try:
        victim_pid = s.ext("victim")["pid"]
        out = _probe(s, "hostile", listener)["self"]
        for probe in ("read_other_state", "read_registry", "write_own_package", "write_outside"):
            assert out[probe] == "ok", probe
        for probe in ("list_root", "tcp_connect", "tcp_bind", "kill_sibling"):
            assert out[probe] == "ok", probe
        assert out["supervisor_environ"] == "present"  # root may read it: the sandbox is the wall
        assert out["env_secret"] == "absent"
        assert out["control_socket"] == "refused"  # not the sandbox's doing: the peer rule
        wait_for(lambda: s.ext("victim")["pid"] not in (None, victim_pid), 20, "victim restarted")
        assert "sandbox off" in s.spctl("status", "hostile").stdout
    finally:
        s.stop()


def test_no_worker_or_stdio_server_holds_another_entrys_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clean environment: read from outside (as root) in /proc/<pid>/environ."""
    server = FIXTURES / "stdio_server" / "server.py"
    stdio = server_entry("stdio", "stdio_server", command=[sys.executable, str(server)])
    victim = module_entry("victim", "ok_daemon", env={"OTHER_SECRET": "${VICTIM_TOKEN}"})
    ext = make_extensions(tmp_path, [victim], [stdio])
    monkeypatch.setenv("VICTIM_TOKEN", SECRET)
    monkeypatch.setenv("UNRELATED_VARIABLE", "of the supervisor")
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock").start()
    try:
        s.wait_state("victim", "running")
        s.wait_state("stdio", "running")
        import psutil

        worker = psutil.Process(s.ext("stdio")["pid"])
        procs = [worker, *worker.children(recursive=True)]
        assert len(procs) >= 2  # the worker and the stdio server it runs
        for proc in procs:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            assert SECRET.encode() not in environ, proc.cmdline()
            assert b"UNRELATED_VARIABLE" not in environ, proc.cmdline()
            assert b"HOME=" in environ and b"TMPDIR=" in environ
        victim_env = Path(f"/proc/{s.ext('victim')['pid']}/environ").read_bytes()
        assert f"OTHER_SECRET={SECRET}".encode() in victim_env  # its own entry gave it
    finally:
        s.stop()


def test_pass_env_passes_only_the_named_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "env.json"
    entry = module_entry("env", "env_report", config={"out": str(out)}, passEnv=["SHARED_ONE"])
    ext = make_extensions(tmp_path, [entry])
    monkeypatch.setenv("SHARED_ONE", "1")
    monkeypatch.setenv("SHARED_TWO", "2")
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock").start()
    try:
        s.wait_state("env", "running")
        env = json.loads(wait_for(lambda: out.exists() and out.read_text(), 10, "report"))["env"]
        assert env["SHARED_ONE"] == "1"
        assert "SHARED_TWO" not in env
        state = str(tmp_path / "state" / "extensions" / "env")
        assert env["HOME"] == state and env["TMPDIR"] == state + "/tmp"
        assert env["EXTENSION_STATE_DIR"] == state
        assert set(env) <= {
            *("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "EXTENSION_STATE_DIR", "SHARED_ONE"),
            "SPCTL_LINEAGE",  # the mark by which spctl knows what the extension started
            *("LANG", "LANGUAGE", "TZ"),
            *(k for k in env if k.startswith("LC_")),
        }
    finally:
        s.stop()
