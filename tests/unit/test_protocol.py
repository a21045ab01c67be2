"""The supervisor ⇄ worker contract: one meaning per code, payloads that round-trip."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from worker import protocol
from worker.protocol import BootSpec, ReadyInfo

MCP_CODES = {-32002, -32020, -32021, -32022, -32042}  # MCP's own, in the server-error band


def test_every_error_code_has_one_name() -> None:
    codes = [v for n in protocol.__all__ if type(v := getattr(protocol, n)) is int and v < 0]
    assert len(codes) == len(set(codes)) == len(protocol.ERROR_CODES)
    for code, name in protocol.ERROR_CODES.items():
        assert getattr(protocol, name) == code


def test_spctl_codes_stay_clear_of_mcp_and_keep_jsonrpc_standard_ones() -> None:
    ours = {
        protocol.SERVICE_ERROR,
        protocol.TIMEOUT,
        protocol.APPLICATION_ERROR,
        protocol.CONNECTION_LOST,
        protocol.CANCELLED,
        protocol.UNKNOWN_EXTENSION,
        protocol.REFUSED,
        protocol.INVALID_CONFIG,
    }
    assert all(-32099 <= code <= -32000 for code in ours)
    assert not ours & MCP_CODES
    assert protocol.RESOURCE_NOT_FOUND == -32002
    standard = (
        protocol.PARSE_ERROR,
        protocol.INVALID_REQUEST,
        protocol.METHOD_NOT_FOUND,
        protocol.INVALID_PARAMS,
        protocol.INTERNAL_ERROR,
    )
    assert standard == (-32700, -32600, -32601, -32602, -32603)


def test_exit_codes_are_distinct_and_described() -> None:
    codes = {n: getattr(protocol, n) for n in protocol.__all__ if n.startswith("EXIT_")}
    codes.pop("EXIT_MEANINGS")
    assert len(set(codes.values())) == len(codes)
    ours = set(codes.values()) - {protocol.EXIT_OK, protocol.EXIT_ERROR}
    assert set(protocol.EXIT_MEANINGS) == ours


def test_protocol_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import worker.protocol; "
        "print(sorted(m for m in ('asyncio', 'msgpack', 'supervisor') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


FULL: dict[str, Any] = {
    "name": "x",
    "kind": "remote_module",
    "path": "/ext",
    "config": {"a": 1},
    "rlimits": {"CORE": [0, 0]},
    "check_interval": 0.5,
    "python_path": ["/lib"],
    "command": ["srv", "--flag"],
    "cwd": "/ext",
    "env": {"K": "v"},
    "url": "https://example.com/rpc",
    "auth": {"type": "bearer", "token": "s3cret"},
    "headers": {"X-H": "v"},
    "provides": ["kv"],
    "uid": 65534,
    "gid": 65534,
}


@pytest.mark.parametrize(
    "spec",
    [
        BootSpec("d", "daemon", "/ext/d"),
        BootSpec("s", "stdio", "/ext", command=("srv",), cwd="/ext", check_interval=2.0),
        BootSpec.parse(FULL),
    ],
)
def test_boot_spec_round_trips(spec: BootSpec) -> None:
    assert BootSpec.parse(spec.to_wire()) == spec


def test_boot_spec_full_wire_form_is_kept() -> None:
    assert BootSpec.parse(FULL).to_wire() == FULL


def test_boot_spec_hides_secrets_in_repr() -> None:
    assert "s3cret" not in repr(BootSpec.parse(FULL))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": 3}, "'name'"),
        ({"path": None}, "'path'"),
        ({"kind": "daemon", "path": ""}, "'path'"),
        ({"config": [1]}, "'config'"),
        ({"rlimits": "x"}, "'rlimits'"),
        ({"check_interval": 0}, "'check_interval'"),
        ({"check_interval": True}, "'check_interval'"),
        ({"python_path": ["a", 1]}, "'python_path'"),
        ({"command": "srv"}, "'command'"),
        ({"kind": "stdio", "command": []}, "'command'"),
        ({"cwd": 1}, "'cwd'"),
        ({"env": {"K": 1}}, "'env'"),
        ({"url": None}, "'url'"),
        ({"auth": ["x"]}, "'auth'"),
        ({"headers": {"X": None}}, "'headers'"),
        ({"provides": "kv"}, "'provides'"),
        ({"uid": None}, "'uid'"),
        ({"gid": -1}, "'gid'"),
    ],
)
def test_boot_spec_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BootSpec.parse({**FULL, **change})


def test_boot_spec_that_is_not_a_map() -> None:
    with pytest.raises(ValueError, match="not a map: list"):
        BootSpec.parse([1, 2])


def test_boot_spec_leaves_an_unknown_kind_to_the_worker() -> None:
    assert BootSpec.parse({"name": "x", "kind": "bogus", "path": "/p"}).kind == "bogus"


def test_ready_info_round_trips() -> None:
    daemon = ReadyInfo(7, "daemon", {"name": "d"}, "3.11.9")
    assert "catalog" not in daemon.to_wire()
    server = ReadyInfo(7, "sdk", {}, "3.12.1", {"tools": [{"name": "t"}], "prompts": []})
    for info in (daemon, server):
        assert ReadyInfo.parse(info.to_wire()) == info


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"pid": 0, "kind": "d", "python": "3"}, "'pid'"),
        ({"pid": True, "kind": "d", "python": "3"}, "'pid'"),
        ({"pid": 1, "kind": None, "python": "3"}, "'kind'"),
        ({"pid": 1, "kind": "d", "python": 3}, "'python'"),
        ({"pid": 1, "kind": "d", "python": "3", "metadata": []}, "'metadata'"),
        ({"pid": 1, "kind": "d", "python": "3", "catalog": {"tools": {}}}, "'catalog'"),
    ],
)
def test_ready_info_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ReadyInfo.parse(raw)
