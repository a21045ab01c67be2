"""supervisor.core.confine: the clean environment (pure) and the extension's share of the
sandbox policy."""

from __future__ import annotations

from pathlib import Path

from supervisor.config.schema import Extension, Sandbox, Source
from supervisor.config.values import FrozenDict
from supervisor.core.confine import (
    DEFAULT_PATH,
    PRIVATE_ENV,
    command_installs,
    sandbox_policy,
    worker_environment,
)

SRC = Source(Path("/srv/ext/servers.yaml"), 1, 1)
STATE, TMP = Path("/state/extensions/x"), Path("/state/extensions/x/tmp")
HOST = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_TIME": "de_DE.UTF-8",
    "TZ": "UTC",
    "HOME": "/root",
    "GITHUB_TOKEN": "secret-of-another",
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "PYTHONPATH": "/somewhere",
}


def _ext(**kw: object) -> Extension:
    return Extension(name="x", section="modules", type="local", source=SRC, **kw)  # type: ignore[arg-type]


def test_the_environment_is_clean() -> None:
    env = worker_environment(_ext(), HOST, STATE, TMP, "svc")
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "de_DE.UTF-8",
        "TZ": "UTC",
        "HOME": str(STATE),
        "USER": "svc",
        "LOGNAME": "svc",
        "TMPDIR": str(TMP),
        "EXTENSION_STATE_DIR": str(STATE),
    }


def test_pass_env_and_env_add_to_it_but_never_the_private_ones() -> None:
    ext = _ext(
        pass_env=("GITHUB_TOKEN", "NOTIFY_SOCKET", "ABSENT"),
        env=FrozenDict({"HOME": "/home/svc", "EXTENSION_STATE_DIR": "/elsewhere", "A": "1"}),
    )
    env = worker_environment(ext, HOST, STATE, TMP, "svc")
    assert env["GITHUB_TOKEN"] == "secret-of-another"  # named: passed on
    assert "NOTIFY_SOCKET" not in env and "NOTIFY_SOCKET" in PRIVATE_ENV
    assert "ABSENT" not in env
    assert env["HOME"] == "/home/svc" and env["A"] == "1"
    assert env["EXTENSION_STATE_DIR"] == str(STATE)


def test_no_path_gets_the_default() -> None:
    assert worker_environment(_ext(), {}, STATE, TMP, "u")["PATH"] == DEFAULT_PATH


def test_policy_has_its_directory_state_and_extras(tmp_path: Path) -> None:
    ext = _ext(
        path=Path("/srv/ext/modules/x"),
        sandbox=Sandbox(network="none", readable=(Path("/docs"),), writable=(Path("/repo"),)),
    )
    policy = sandbox_policy(ext, STATE, "/usr/bin")
    assert policy["readable"] == ["/srv/ext/modules/x", "/docs"]
    assert policy["writable"] == [str(STATE), "/repo"]
    assert policy["network"] == "none" and policy["filesystem"] == "strict"
    assert "/srv/ext" in policy["private"]  # the registry: never opened up by sys.path


def test_policy_off() -> None:
    ext = _ext(sandbox=Sandbox(filesystem="off", network="any"))
    assert sandbox_policy(ext, STATE, "/usr/bin") == {"filesystem": "off", "network": "any"}


def test_a_command_in_a_venv_opens_the_venv_and_its_base(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /opt/python/3.12/bin\nversion = 3.12.1\n")
    program = venv / "bin" / "mcp-server-time"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    found = command_installs(["mcp-server-time", "--local-timezone=UTC"], str(venv / "bin"))
    assert found[:2] == [venv, Path("/opt/python/3.12")]


def test_an_npm_package_opens_its_prefix_and_a_system_program_nothing(tmp_path: Path) -> None:
    script = tmp_path / "prefix" / "lib" / "node_modules" / "@scope" / "srv" / "dist" / "index.js"
    script.parent.mkdir(parents=True)
    script.write_text("")
    assert command_installs(["sh", str(script)], "/usr/bin:/bin") == [tmp_path / "prefix" / "lib"]
    assert command_installs(["sh"], "/usr/bin:/bin") == []
    assert command_installs(["no-such-program"], "/usr/bin") == []
