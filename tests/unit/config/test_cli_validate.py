"""``spctl validate``, run as the real console command: output, --json and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.config.helpers import Tree

SPCTL = Path(sys.executable).with_name("spctl")

GOOD_SERVERS = """
    servers:
      - {name: weather, type: local, path: servers/weather}
      - {name: api, type: remote, url: 'https://a.example', enabled: false}
      - {name: time, type: local, command: [uvx, mcp-server-time]}
    """
GOOD_MODULES = (
    "modules:\n  - {name: backup, type: local, path: modules/backup, moduleType: daemon}\n"
)


SRV = {"enabled_source": "servers.yaml"}


def spctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPCTL), "validate", *args],
        cwd=cwd,
        # no `spctl enable/disable` overrides from this machine's state directory
        env={**os.environ, "STATE_DIRECTORY": str(cwd / "state")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_valid_registry_exits_0(tree: Tree) -> None:
    tree.servers(GOOD_SERVERS)
    tree.modules(GOOD_MODULES)
    done = spctl(tree.base)  # default --extensions: ./extensions
    assert (done.returncode, done.stdout) == (0, "3 servers, 1 module (1 disabled)\n")


def test_invalid_registry_prints_every_error_and_exits_1(tree: Tree) -> None:
    tree.servers(
        "servers:\n"
        "  - {name: weather, type: local, path: ../../etc}\n"
        "  - {name: api, type: remote, url: 'https://a.example', auth: {type: kerberos}}\n"
    )
    tree.modules("modules:\n  - {name: backup, type: local, path: modules/backup}\n")
    done = spctl(tree.base, "--extensions", "extensions")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "extensions/servers.yaml:2:40: servers[0].path: resolves outside extensions/ (../../etc)",
        "extensions/servers.yaml:3:70: servers[1].auth.type: expected one of bearer, apikey, "
        "oauth2, got 'kerberos'",
        "extensions/modules.yaml:2:5: modules[0].moduleType: is required",
        "invalid: 3 errors in 2 files",
    ]


def test_json_report(tree: Tree) -> None:
    tree.servers(GOOD_SERVERS)
    tree.modules("modules:\n  - {name: backup, type: local, path: modules/backup}\n")
    done = spctl(tree.base, "--extensions", str(tree.root), "--json")
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["ok"] is False
    assert document["errors"] == [
        {
            "file": "extensions/modules.yaml",
            "line": 2,
            "column": 5,
            "field": "modules[0].moduleType",
            "message": "is required",
            "extension": "backup",
        }
    ]
    assert document["summary"] == {"servers": 3, "modules": 0, "disabled": 1}
    assert document["extensions"] == [
        {"name": "weather", "kind": "server", "type": "local", "enabled": True, **SRV},
        {"name": "api", "kind": "server", "type": "remote", "enabled": False, **SRV},
        {"name": "time", "kind": "server", "type": "local", "enabled": True, **SRV},
    ]


def test_json_report_when_valid(tree: Tree) -> None:
    tree.modules(GOOD_MODULES)
    done = spctl(tree.base, "--json")
    assert done.returncode == 0
    document = json.loads(done.stdout)
    assert (document["ok"], document["errors"]) == (True, [])
    assert document["summary"] == {"servers": 0, "modules": 1, "disabled": 0}


def test_missing_directory_exits_1(tmp_path: Path) -> None:
    done = spctl(tmp_path, "--extensions", "nowhere")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "nowhere: extensions directory not found",
        "invalid: 1 error in 1 file",
    ]


@pytest.mark.parametrize("args", [["--bogus"], ["--extensions"], ["extra-argument"]])
def test_usage_error_exits_2(tmp_path: Path, args: list[str]) -> None:
    done = spctl(tmp_path, *args)
    assert done.returncode == 2
    assert done.stdout == ""


def test_the_command_imports_nothing_heavy() -> None:
    probe = (
        "import sys, supervisor.cli.validate;"
        "heavy = {'anyio', 'structlog', 'psutil', 'msgpack', 'mcp'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
