"""install: and requirements: in the config, the lock's checks, uv's output: no network here
(the real builds are in tests/integration/test_envs.py)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from supervisor.config import Extension, load_registry
from supervisor.install.envlock import (
    EnvError,
    digest_of,
    host_python,
    lock_extension,
    locked_env,
    requirements_of,
)
from supervisor.install.lockfile import update_lock
from supervisor.install.uv import LockedPackage, UvError, parse_compiled

H1, H2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def registry(tmp_path: Path, servers: str) -> tuple[Path, dict[str, object]]:
    root = tmp_path / "extensions"
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "servers.yaml").write_text(textwrap.dedent(servers))
    result = load_registry(root)
    problems = {e.field: e.message for e in result.errors}
    return root.resolve(), {"result": result, "problems": problems}


def one(tmp_path: Path, servers: str) -> tuple[Path, Extension]:
    root, found = registry(tmp_path, servers)
    result = found["result"]
    assert not found["problems"], found["problems"]
    ext = result.registry.extensions[0]  # type: ignore[attr-defined]
    return root, ext


def test_parse_compiled_reads_pins_and_hashes() -> None:
    out = (
        f"idna==3.10 \\\n    --hash={H1} \\\n    --hash={H2}\nMsgpack==1.2.4 \\\n    --hash={H2}\n"
    )
    assert parse_compiled(out) == [
        LockedPackage("idna", "3.10", (H1, H2)),
        LockedPackage("msgpack", "1.2.4", (H2,)),
    ]


def test_parse_compiled_refuses_nothing_and_no_hash() -> None:
    with pytest.raises(UvError, match="resolved nothing"):
        parse_compiled("")
    with pytest.raises(UvError, match=r"no hash for idna==3\.10"):
        parse_compiled("idna==3.10\n")


def test_digest_is_stable_and_depends_on_everything() -> None:
    a = [LockedPackage("idna", "3.10", (H1,))]
    assert digest_of("3.11", a) == digest_of("3.11", list(a))
    assert digest_of("3.11", a) != digest_of("3.12", a)
    assert digest_of("3.11", a) != digest_of("3.11", [LockedPackage("idna", "3.9", (H1,))])
    assert digest_of("3.11", a) != digest_of("3.11", [LockedPackage("idna", "3.10", (H2,))])


def test_install_and_requirements_are_read(tmp_path: Path) -> None:
    _, ext = one(
        tmp_path,
        """\
        servers:
          - name: time
            type: local
            install: pypi:MCP_Server.Time==2026.10.19
            command: [mcp-server-time]
            requirements: ["idna>=3"]
        """,
    )
    assert ext.environment is not None
    assert ext.environment.install_kind == "pypi"
    assert requirements_of(ext) == ["mcp-server-time==2026.10.19", "idna>=3"]


def test_requirements_file(tmp_path: Path) -> None:
    (tmp_path / "extensions" / "pkg").mkdir(parents=True)
    (tmp_path / "extensions" / "pkg" / "requirements.txt").write_text(
        "# deps\nidna==3.10  # for names\n\nmsgpack>=1\n"
    )
    _, ext = one(
        tmp_path,
        """\
        servers:
          - {name: a, type: local, path: ./pkg, requirements: ./pkg/requirements.txt}
        """,
    )
    assert ext.environment is not None
    assert ext.environment.requirements == ("idna==3.10", "msgpack>=1")


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ("install: pypi:x, command: [x]", "servers[0].install", "expected pypi:NAME==VERSION"),
        ("install: 'pypi:x>=1', command: [x]", "servers[0].install", "pypi:NAME==VERSION"),
        ("install: npm:Bad Name, command: [x]", "servers[0].install", "npm:NAME@VERSION"),
        ("install: ./nope.whl, command: [x]", "servers[0].install", "does not exist"),
        ("install: ../x.whl, command: [x]", "servers[0].install", "resolves outside"),
        ("install: 'pypi:x==1', path: ./pkg", "servers[0].install", "needs command:"),
        ("path: ./pkg, requirements: [-e .]", "servers[0].requirements[0]", "pip options"),
        (
            "path: ./pkg, requirements: ['x @ https://e.x/x.whl']",
            "servers[0].requirements[0]",
            "direct URL",
        ),
        ("path: ./pkg, requirements: ./missing.txt", "servers[0].requirements", "does not exist"),
        (
            "path: ./pkg, requirements: [x], python: /usr/bin/python3",
            "servers[0].python",
            "cannot be combined",
        ),
        ("path: ./pkg, requirements: []", "servers[0].requirements", "at least one"),
    ],
)
def test_bad_entries(tmp_path: Path, entry: str, field: str, message: str) -> None:
    _, found = registry(tmp_path, f"servers:\n  - {{name: a, type: local, {entry}}}\n")
    problems = found["problems"]
    assert isinstance(problems, dict)
    assert field in problems, problems
    assert message in problems[field]


def test_npm_without_node_or_npm_on_path_names_the_missing_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, found = registry(
        tmp_path,
        'servers:\n  - {name: a, type: local, install: "npm:@scope/pkg@1.2.3", command: [pkg]}\n',
    )
    assert not found["problems"]
    (a,) = found["result"].registry.extensions  # type: ignore[attr-defined]
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(EnvError, match=r"a: cannot lock npm:@scope/pkg@1\.2\.3: node and npm not"):
        lock_extension(a, root)
    assert not (root / "spctl.lock").exists()


WHEEL = "dist/tiny_mcp-1.0.0-py3-none-any.whl"


def wheel_entry(tmp_path: Path, content: bytes = b"a wheel") -> tuple[Path, Extension]:
    (tmp_path / "extensions" / "dist").mkdir(parents=True, exist_ok=True)
    (tmp_path / "extensions" / WHEEL).write_bytes(content)
    return one(
        tmp_path, f"servers:\n  - {{name: b, type: local, install: ./{WHEEL}, command: [x]}}\n"
    )


def wheel_table(wheel_hash: str, **over: object) -> dict[str, object]:
    packages = [
        LockedPackage("msgpack", "1.2.4", (H2,)),
        LockedPackage("tiny-mcp", "1.0.0", (wheel_hash,), WHEEL),
    ]
    table: dict[str, object] = {
        "source": f"./{WHEEL}",
        "requirements": [f"./{WHEEL}"],
        "python": host_python(),
        "digest": digest_of(host_python(), packages),
        "packages": [p.to_lock() for p in packages],
    }
    table.update(over)
    return table


def test_a_wheel_is_locked_by_its_sha256(tmp_path: Path) -> None:
    root, ext = wheel_entry(tmp_path)
    digest = "sha256:" + hashlib.sha256(b"a wheel").hexdigest()
    update_lock(root, "extensions", "b", wheel_table(digest))
    env = locked_env(ext, root, tmp_path / "state")
    assert env is not None
    (mine,) = (p for p in env.packages if p.file)
    assert mine.file == str(root / WHEEL)  # absolute for the build
    assert mine.requirement() == f"tiny-mcp @ {(root / WHEEL).as_uri()} --hash={digest}"
    # one byte changed: refused, with both hashes and the fix
    (root / WHEEL).write_bytes(b"a wheeL")
    with pytest.raises(EnvError) as caught:
        locked_env(ext, root, tmp_path / "state")
    assert f"./{WHEEL} has changed since it was locked" in str(caught.value)
    assert digest in str(caught.value) and "run `spctl lock b`" in str(caught.value)


def test_a_lock_naming_another_file_is_refused(tmp_path: Path) -> None:
    root, ext = wheel_entry(tmp_path)
    digest = "sha256:" + hashlib.sha256(b"a wheel").hexdigest()
    packages = [
        LockedPackage("msgpack", "1.2.4", (H2,)),
        LockedPackage("tiny-mcp", "1.0.0", (digest,), "../../etc/x.whl"),
    ]
    edited = {"digest": digest_of(host_python(), packages)}
    edited["packages"] = [p.to_lock() for p in packages]  # type: ignore[assignment]
    update_lock(root, "extensions", "b", wheel_table(digest, **edited))
    with pytest.raises(EnvError, match=r"locks the files \['../../etc/x.whl'\], the entry"):
        locked_env(ext, root, tmp_path / "state")


def test_an_archive_name_that_is_not_a_wheel_or_sdist(tmp_path: Path) -> None:
    (tmp_path / "extensions").mkdir()
    (tmp_path / "extensions" / "x.whl").write_bytes(b"")
    root, ext = one(
        tmp_path, "servers:\n  - {name: b, type: local, install: ./x.whl, command: [x]}\n"
    )
    with pytest.raises(EnvError, match=r"b: install: ./x.whl: not a wheel or sdist file name"):
        lock_extension(ext, root)
    assert not (root / "spctl.lock").exists()


def test_seed_extensions_still_load() -> None:
    result = load_registry(Path(__file__).parents[3] / "extensions")
    assert result.ok, result.errors
    assert all(ext.environment is None for ext in result.registry.extensions)


def lock_table(**over: object) -> dict[str, object]:
    packages = [LockedPackage("idna", "3.10", (H1,)), LockedPackage("msgpack", "1.2.4", (H2,))]
    table: dict[str, object] = {
        "source": "",
        "requirements": ["idna==3.10"],
        "python": host_python(),
        "digest": digest_of(host_python(), packages),
        "packages": [p.to_lock() for p in packages],
    }
    table.update(over)
    return table


SERVER = """\
servers:
  - {name: a, type: local, path: ./pkg, requirements: [idna==3.10]}
"""


def test_locked_env_matches(tmp_path: Path) -> None:
    root, ext = one(tmp_path, SERVER)
    assert locked_env(ext, root, tmp_path / "state") is None  # no lock entry yet
    update_lock(root, "extensions", "a", lock_table())
    env = locked_env(ext, root, tmp_path / "state")
    assert env is not None and not env.complete
    assert env.path.parent == tmp_path / "state" / "envs"
    assert env.path.name == "a-" + str(lock_table()["digest"]).removeprefix("sha256:")[:12]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"requirements": ["idna==3.9"]}, "locked for requirements ['idna==3.9']"),
        ({"python": "2.7"}, "locked for Python '2.7'"),
        ({"digest": "sha256:" + "0" * 64}, "does not match its packages (edited by hand?)"),
        ({"packages": []}, "packages must be a non-empty list"),
        ({"packages": [{"name": "idna", "version": "3.10"}]}, "packages[0] needs name"),
        ({"packages": [{"name": "idna", "version": "3.10", "hashes": [H1]}]}, "has no msgpack"),
    ],
)
def test_inconsistent_lock_is_refused(
    tmp_path: Path, over: dict[str, object], message: str
) -> None:
    root, ext = one(tmp_path, SERVER)
    update_lock(root, "extensions", "a", lock_table(**over))
    with pytest.raises(EnvError) as caught:
        locked_env(ext, root, tmp_path / "state")
    assert message in str(caught.value)
    assert "run `spctl lock a`" in str(caught.value)


def test_with_env_resolves_the_command_in_bin(tmp_path: Path) -> None:
    from supervisor.install.envs import Env, with_env

    _, ext = one(
        tmp_path,
        """\
        servers:
          - {name: t, type: local, install: "pypi:t==1", command: [t-server, --flag]}
        """,
    )
    env = Env("t", "sha256:" + "a" * 64, host_python(), (), tmp_path / "env")
    (env.bin).mkdir(parents=True)
    (env.bin / "python").touch()
    (env.bin / "other-server").touch()
    with pytest.raises(
        EnvError,
        match=r"t-server is not in the environment's bin/ \(it has: "
        r"other-server\)",
    ):
        with_env(ext, env)
    (env.bin / "t-server").touch()
    running = with_env(ext, env)
    assert running.command == (str(env.bin / "t-server"), "--flag")
    assert running.python == env.python


def test_uv_bin_is_safe_from_threads_at_once() -> None:
    """Two extensions' environments built at once asked for the uv binary from two threads:
    ``sysconfig``'s first initialisation is not thread-safe, and one of them got
    ``TypeError: can only concatenate str (not "NoneType")`` (the runner crashed). A fresh
    interpreter, so that sysconfig is initialised by the threads themselves."""
    import subprocess
    import sys

    code = (
        "import threading\n"
        "from supervisor.install.uv import uv_bin\n"
        "errors, found = [], []\n"
        "def ask():\n"
        "    try:\n"
        "        found.append(uv_bin())\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=ask) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "assert not errors, errors\n"
        "assert len(set(found)) == 1 and len(found) == 8, found\n"
    )
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
