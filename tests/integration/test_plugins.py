"""Plugin modules (``moduleType: plugin``, ``provides:``): their services called with
``spctl call MODULE service.method`` and, through the supervisor, by other extensions with
``worker.api.call_service``; a real supervisor and real workers."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.helpers import Serve, module_entry, serve_fixture, server_entry, wait_for


def _kv(**extra: Any) -> dict[str, Any]:
    return module_entry("kv-store", "plugin_kv", moduleType="plugin", provides=["kv"], **extra)


def _call(s: Serve, ext: str, name: str, *args: str) -> tuple[int, str, str]:
    out = s.spctl("call", ext, name, *args)
    return out.returncode, out.stdout.strip(), out.stderr.strip()


def test_spctl_call_reaches_a_plugins_service(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [_kv(), module_entry("d", "ok_daemon")]) as s:
        s.start()
        s.wait_state("kv-store", "running")
        s.wait_state("d", "running")
        assert _call(s, "kv-store", "kv.put", "--arg", "key=a", "--arg", "value=41")[:2] == (
            0,
            "true",
        )
        assert _call(s, "kv-store", "kv.get", "--arg", "key=a") == (0, "41", "")
        code, out, _ = _call(s, "kv-store", "kv.keys")
        assert (code, json.loads(out)) == (0, ["a"])
        cases = [
            ("kv.nope", [], "service 'kv' has no method 'nope'"),
            ("kv._private", [], "service 'kv' has no method '_private'"),
            ("hidden.secret", [], "kv-store provides no 'hidden.secret'"),
            ("kv", [], "kv-store provides no 'kv'"),
            ("kv.fail", [], "kv.fail: ValueError: kv says no"),
            ("kv.put", ["--arg", "key=a"], "missing a required argument: 'value'"),
        ]
        for name, args, says in cases:
            code, out, err = _call(s, "kv-store", name, *args)
            assert code == 1 and says in err, (name, out, err)
        code, _, err = _call(s, "d", "kv.get")
        assert code == 1 and "d is a daemon module: it has no services" in err
        # still serving after all that
        assert _call(s, "kv-store", "kv.get", "--arg", "key=a")[1] == "41"


def test_extensions_use_a_service_through_the_supervisor(tmp_path: Path) -> None:
    servers = [server_entry("user", "service_user")]
    with serve_fixture(tmp_path, [_kv()], servers) as s:
        s.start()
        pid = s.wait_state("kv-store", "running")["pid"]
        s.wait_state("user", "running")
        code, out, err = _call(s, "user", "remember", "--arg", "key=b", "--arg", "value=2")
        assert (code, out) == (0, "2"), err
        code, out, err = _call(s, "user", "remember_sync", "--arg", "key=c", "--arg", "value=3")
        assert (code, out) == (0, "3"), err
        assert json.loads(_call(s, "kv-store", "kv.keys")[1]) == ["b", "c"]
        _, out, _ = _call(s, "user", "ask", "--json", '{"service": "nope.x"}')
        assert out == "-32601 no module provides the service 'nope'"
        _, out, _ = _call(s, "user", "ask", "--json", '{"service": "kv.fail"}')
        assert out == "-32000 kv.fail: ValueError: kv says no"
        # the provider killed: restarted by the supervisor, and reachable again
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: (e := s.ext("kv-store"))["state"] == "running" and e["pid"] not in (None, pid),
            20,
            "the plugin to be restarted",
        )
        _, out, _ = _call(s, "user", "ask", "--json", '{"service": "kv.keys"}')
        assert out == "[]"  # a new worker: its in-memory state is new too


def test_a_plugin_that_lacks_a_service_it_provides_fails_to_load(tmp_path: Path) -> None:
    entry = module_entry("kv-store", "plugin_kv", moduleType="plugin", provides=["kv", "blob"])
    with serve_fixture(tmp_path, [entry]) as s:
        s.start()
        e = s.wait_state("kv-store", "failed", timeout=30)
        assert "'provides' lists blob but 'services' has only hidden, kv" in json.dumps(e)


def test_a_lazy_plugin_is_started_by_its_first_call(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [_kv(lazy=True)]) as s:
        s.start()
        assert s.ext("kv-store")["state"] == "stopped"
        assert _call(s, "kv-store", "kv.keys")[:2] == (0, "[]")
        assert s.ext("kv-store")["state"] == "running"


def test_spctl_services_lists_who_provides_what(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [_kv(lazy=True), module_entry("d", "ok_daemon")]) as s:
        s.start()
        out = s.spctl("services", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["services"] == [
            {
                "service": "kv",
                "module": "kv-store",
                "type": "local",
                "state": "stopped",
                "lazy": True,
            }
        ]
        table = s.spctl("services").stdout.splitlines()
        assert table[0].split() == ["SERVICE", "MODULE", "TYPE", "STATE"]
        assert table[1].split() == ["kv", "kv-store", "local", "stopped", "(lazy)"]


def test_a_service_call_in_flight_keeps_an_idle_plugin_up(tmp_path: Path) -> None:
    """``idleTimeout`` counts service calls as activity: a call longer than it is not cut."""
    with serve_fixture(tmp_path, [_kv(lazy=True, idleTimeout="500ms")]) as s:
        s.start()
        assert _call(s, "kv-store", "kv.nap", "--arg", "seconds=1.5") == (0, "rested", "")
