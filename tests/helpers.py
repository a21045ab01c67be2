"""Shared test helpers: wait on conditions with deadlines (never sleep to synchronise), and
run real ``spctl serve`` supervisors on a private extensions directory and socket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SPCTL = str(Path(sys.executable).with_name("spctl"))


def interruptible(argv: list[str]) -> list[str]:
    """``argv`` run with SIGINT at its default first: a process started from a background job
    of a non-interactive shell (``make test &``, some CI runners) inherits SIGINT *ignored*,
    and Python then installs no KeyboardInterrupt handler, so a test's Ctrl-C would be lost."""
    restore = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", restore, *argv]


def wait_for(cond: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval of a deadline wait, not synchronisation
        delay = min(delay * 2, 0.05)


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


TEST_SANDBOX: dict[str, Any] = {"writable": [tempfile.gettempdir()]}
"""The sandbox of test entries that do not set one: strict, and the temporary directory (where
pytest's ``tmp_path`` is) writable, for fixtures that write what they saw beside the test.
Tests of the sandbox itself set theirs (tests/chaos/test_confinement.py)."""


def module_entry(name: str, fixture: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "type": "local",
        "path": f"./modules/{fixture}",
        "moduleType": "daemon",
        "sandbox": TEST_SANDBOX,
    }
    entry.update(extra)
    return entry


def server_entry(name: str, fixture: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "type": "local",
        "path": f"./servers/{fixture}",
        "sandbox": TEST_SANDBOX,
    }
    entry.update(extra)
    return entry


def make_extensions(
    root: Path, modules: list[dict[str, Any]], servers: list[dict[str, Any]] | None = None
) -> Path:
    """An extensions/ dir with copies of the fixtures the entries use.

    Every entry runs in its sandbox (strict); one without a ``sandbox`` of its own gets
    :data:`TEST_SANDBOX`, as from :func:`module_entry`.
    """
    for entry in (*modules, *(servers or [])):
        entry.setdefault("sandbox", TEST_SANDBOX)
    ext = root / "extensions"
    (ext / "modules").mkdir(parents=True, exist_ok=True)
    (ext / "servers").mkdir(parents=True, exist_ok=True)
    for section, entries in (("modules", modules), ("servers", servers or [])):
        for entry in entries:
            if "path" not in entry:
                continue
            fixture = Path(entry["path"]).name
            if (FIXTURES / fixture).is_dir() and not (ext / section / fixture).exists():
                shutil.copytree(FIXTURES / fixture, ext / section / fixture)
    (ext / "modules.yaml").write_text(yaml.safe_dump({"modules": modules}, sort_keys=False))
    (ext / "servers.yaml").write_text(yaml.safe_dump({"servers": servers or []}, sort_keys=False))
    return ext


@dataclass
class Serve:
    """A real ``spctl serve`` subprocess with its own socket."""

    root: Path
    extensions: Path
    socket: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    extra_args: list[str] = field(default_factory=list)
    front: bool = False  # most tests don't need the MCP front (it imports the SDK: ~1.5 s CPU)

    def __post_init__(self) -> None:
        self.log_path = self.root / "serve.log"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SPCTL_SOCKET"] = str(self.socket)
        env["STATE_DIRECTORY"] = str(self.root / "state")
        env.pop("NOTIFY_SOCKET", None)
        return env

    def start(self, wait: bool = True) -> Serve:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                SPCTL,
                "serve",
                "--extensions",
                str(self.extensions),
                "--log-json",
                *([] if self.front else ["--no-front"]),
                *self.extra_args,
            ],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        if wait:
            wait_for(
                lambda: self.socket.exists() and self.try_status() is not None, 20, "serve socket"
            )
        return self

    def spctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SPCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def try_status(self) -> dict[str, Any] | None:
        from supervisor.control.client import ControlClient, NotRunning

        try:
            with ControlClient(self.socket, timeout=5) as c:
                result: dict[str, Any] = c.call("status", None)
                return result
        except (NotRunning, OSError, TimeoutError):
            return None

    def call(self, method: str, *params: Any, timeout: float = 30) -> Any:
        from supervisor.control.client import ControlClient

        with ControlClient(self.socket, timeout=timeout) as c:
            return c.call(method, *params)

    def ext(self, name: str) -> dict[str, Any]:
        status = self.try_status()
        assert status is not None, "supervisor not answering"
        for e in status["extensions"]:
            if e["name"] == name:
                return e
        raise KeyError(name)

    def wait_state(self, name: str, state: str, timeout: float = 20) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            try:
                e = self.ext(name)
            except KeyError:
                return None  # not (yet) in the registry
            return e if e["state"] == state else None

        return wait_for(reached, timeout, f"{name} to be {state} (log: {self.log_path})")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with_children = descendants(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
            for pid in with_children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def serve_fixture(
    tmp_path: Path,
    modules: list[dict[str, Any]],
    servers: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> Iterator[Serve]:
    ext = make_extensions(tmp_path, modules, servers)
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock", **kw)
    try:
        yield s
    finally:
        s.kill()


@dataclass
class HttpFixture:
    """A fixture HTTP server script running as a subprocess on 127.0.0.1 (see
    :func:`start_http_fixture`); its ``/stats`` route tells what it saw."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.base}/stats", timeout=5) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


H = TypeVar("H", bound=HttpFixture)


def start_http_fixture(
    cls: type[H], script: Path, tmp_path: Path, args: list[str], port: int = 0
) -> H:
    """Run ``script --port-file F --port PORT *args`` and wait until it wrote its port to F."""
    port_file = tmp_path / f"{script.parent.name}-{time.monotonic_ns()}.port"
    argv = [sys.executable, str(script), "--port-file", str(port_file), "--port", str(port)]
    proc = subprocess.Popen([*argv, *args], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_file.exists() or proc.poll() is not None, 30, str(script))
        assert proc.poll() is None, f"{script} did not start"
        return cls(proc, int(port_file.read_text()))
    except BaseException:
        proc.kill()
        raise


CACHE = REPO / ".venv" / "test-cache"
"""Where tests and benchmarks keep what they install (published MCP servers, other venvs)."""


def shared_cache() -> Path:
    """A cache other users can traverse and read (0755, ours, under the temporary directory),
    for what a test runs as another user: the repository's own ``.venv/test-cache`` is not
    reachable by them when the clone lies under a private (0700) directory."""
    path = Path(tempfile.gettempdir()) / f"spctl-test-shared-{os.getuid()}"
    path.mkdir(mode=0o755, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise InstallFailed(f"{path} is not a directory of ours: refusing to use it")
    path.chmod(0o755)
    return path


def readable_copy(package: Path, into: Path) -> Path:
    """Copy the directory ``package`` into ``into`` readable by every user (dirs 0755, files
    0644) and return ``into``, for a ``PYTHONPATH`` another user can import it from."""
    target = into / package.name
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__"))
    for p in [into, *into.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return into


class InstallFailed(Exception):
    """Something could not be installed into the cache (no network, say); the text says why."""


@contextlib.contextmanager
def _install_lock(target: Path) -> Iterator[None]:
    """Serialise installs of ``target`` across threads and processes (xdist workers)."""
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_install(target: Path, what: str, steps: list[list[str]]) -> Path:
    """Run ``steps`` into ``target`` unless its marker already names ``what`` (so a changed pin
    reinstalls); ``target``. Raises InstallFailed with the tail of the failing step's output."""
    marker = target / ".installed"
    with _install_lock(target):
        if marker.exists() and marker.read_text() == what:
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for argv in steps:
            try:
                subprocess.run(argv, check=True, capture_output=True, timeout=300)
            except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                shutil.rmtree(target, ignore_errors=True)
                detail = getattr(e, "stderr", None) or str(e).encode()
                tail = detail.decode(errors="replace")[-300:]
                raise InstallFailed(f"cannot install {what}: {tail}") from None
        marker.write_text(what)
    return target


def pip_venv(
    name: str, requirements: list[str], python: str = sys.executable, under: Path = CACHE
) -> Path:
    """A venv ``under/name`` of ``python`` with ``requirements`` installed (its directory).
    Raises InstallFailed."""
    venv = under / name
    steps = [
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
    ]
    return cached_install(venv, f"{python}: {' '.join(requirements)}", steps)


def npm_bin(spec: str) -> list[str]:
    """``[node, <entry>]`` for the npm package ``spec`` (``@scope/name@version``) installed
    into an npm ``--prefix`` of its own under the cache (one per name and version); the entry
    is the package's own (first) ``bin``. Raises InstallFailed, also without node/npm."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise InstallFailed("node/npm not on PATH")
    package, version = spec.rsplit("@", 1)
    prefix = CACHE / f"node-{package.rsplit('/', 1)[-1]}-{version}"
    steps = [[npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), spec]]
    cached_install(prefix, spec, steps)
    root = prefix / "node_modules" / package
    bins = json.loads((root / "package.json").read_text())["bin"]
    entry = bins if isinstance(bins, str) else next(iter(bins.values()))
    return [node, str(root / entry)]
