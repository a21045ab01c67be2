"""The ``uv`` binary (from the ``uv`` PyPI package spctl depends on): resolve with hashes, make
a venv, install from a lock. Plain subprocesses; uv's cache is its default or ``UV_CACHE_DIR``.

When the index cannot be reached, each command is retried once with ``--offline`` (uv's cache
only); when that fails too, the error says the cache cannot satisfy the request.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LockedPackage",
    "UvError",
    "compile_locked",
    "install_locked",
    "make_venv",
    "run_child",
    "set_child_hooks",
    "uv_bin",
]

_NETWORK_HINTS = (
    "dns error",
    "failed to lookup address",
    "connection refused",
    "network is unreachable",
    "error sending request",
    "operation timed out",
    "connect error",
    "tcp connect",
    "failed to fetch",
)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_URL_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*) @ (file://\S+)")  # a local archive
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
_TIMEOUT = 600.0


class UvError(Exception):
    """A uv command failed; the message holds what uv said (its last lines)."""


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    hashes: tuple[str, ...]
    file: str = ""  # a local archive: its path (in the lock: relative to the extensions dir)

    def to_lock(self) -> dict[str, object]:
        table: dict[str, object] = {"name": self.name, "version": self.version}
        if self.file:
            table["file"] = self.file
        table["hashes"] = list(self.hashes)
        return table

    def requirement(self) -> str:
        """Its line in a requirements file for ``uv pip install --require-hashes``."""
        hashes = " ".join(f"--hash={h}" for h in self.hashes)
        if self.file:
            return f"{self.name} @ {Path(self.file).as_uri()} {hashes}"
        return f"{self.name}=={self.version} {hashes}"


_UV_LOCK = threading.Lock()
_UV_BIN: list[str] = []  # found once: sysconfig's first use is not thread-safe


def uv_bin() -> str:
    """The path of the uv binary that ships with the ``uv`` package (environments are built
    in threads, several at once: the first lookup is made under a lock and kept)."""
    with _UV_LOCK:
        if not _UV_BIN:
            _UV_BIN.append(_find_uv_bin())
        return _UV_BIN[0]


def _find_uv_bin() -> str:
    try:
        from uv import find_uv_bin
    except ImportError as exc:  # pragma: no cover - a broken installation
        raise UvError(f"the uv package is not installed ({exc}); reinstall spctl") from None
    try:
        return str(find_uv_bin())
    except FileNotFoundError as exc:  # pragma: no cover - a broken installation
        raise UvError(f"the uv binary is missing ({exc}); reinstall spctl") from None


def compile_locked(
    requirements: Sequence[str], python_version: str, workdir: Path
) -> list[LockedPackage]:
    """Resolve ``requirements`` for ``python_version`` into exact versions with hashes."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "requirements.in"
    source.write_text("".join(f"{line}\n" for line in requirements), encoding="utf-8")
    argv = [
        *("pip", "compile", "--no-config", "--generate-hashes", "--no-header", "--no-annotate"),
        *("--quiet", "--python-version", python_version, str(source)),
    ]
    out = _run(argv, what="resolving " + ", ".join(requirements))
    return parse_compiled(out)


def parse_compiled(text: str) -> list[LockedPackage]:
    """The packages of ``uv pip compile --generate-hashes`` output."""
    packages: list[LockedPackage] = []
    name = version = None
    file = ""
    hashes: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pin, url = _PIN.match(line), _URL_PIN.match(line)
        if pin is not None or url is not None:
            if name is not None and version is not None:
                packages.append(LockedPackage(name, version, tuple(hashes), file))
            hashes = []
            if pin is not None:
                name, version, file = pin.group(1).lower(), pin.group(2).rstrip("\\ "), ""
            elif url is not None:  # the version: from the archive's name (envlock)
                name, version = url.group(1).lower(), ""
                file = urllib.parse.unquote(urllib.parse.urlsplit(url.group(2)).path)
        elif not line.startswith("--hash="):
            raise UvError(f"uv pip compile gave a line spctl cannot lock: {line}")
        hashes.extend(_HASH.findall(line))
    if name is not None and version is not None:
        packages.append(LockedPackage(name, version, tuple(hashes), file))
    if not packages:
        raise UvError(f"uv resolved nothing (its output: {_tail(text)})")
    for package in packages:
        if not package.hashes:
            raise UvError(f"uv gave no hash for {package.name}=={package.version}")
    return sorted(packages, key=lambda p: p.name)


def make_venv(target: Path, python: str) -> None:
    """``uv venv`` at ``target`` on the interpreter ``python`` (no pip, no seed packages)."""
    _run(
        ["venv", "--no-config", "--quiet", "--relocatable", "--python", python, str(target)],
        what=f"creating a venv at {target}",
        offline_retry=False,
    )


def install_locked(python: Path, packages: Sequence[LockedPackage], workdir: Path) -> None:
    """Install exactly ``packages`` (no dependency resolution, every hash required)."""
    locked = workdir / "requirements.lock"
    locked.write_text("".join(p.requirement() + "\n" for p in packages), encoding="utf-8")
    argv = [
        *("pip", "install", "--no-config", "--quiet", "--require-hashes", "--no-deps"),
        *("--python", str(python), "-r", str(locked)),
    ]
    _run(argv, what=f"installing {len(packages)} locked packages")


def _run(argv: list[str], *, what: str, offline_retry: bool = True) -> str:
    env: Mapping[str, str] = {**os.environ, "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}
    first = _once([uv_bin(), *argv], env)
    if first.returncode == 0:
        return first.stdout
    said = _tail(first.stderr or first.stdout)
    if not (offline_retry and _looks_offline(said)):
        raise UvError(f"{what}: {said}")
    second = _once([uv_bin(), *argv, "--offline"], env)
    if second.returncode == 0:
        return second.stdout
    raise UvError(
        f"{what}: the package index cannot be reached ({said}), and uv's cache cannot satisfy "
        f"it offline: {_tail(second.stderr or second.stdout)}"
    )


def set_child_hooks(
    starting: Callable[[], None],
    started: Callable[[int | None], None],
    ended: Callable[[int], None],
) -> None:
    """How a supervisor that reaps and kills children it does not know (the core's orphan
    handling) is told about uv: ``starting()`` before the fork, ``started(pid)`` after it
    (None: the fork failed), ``ended(pid)`` once uv is reaped."""
    _hooks[:] = [starting, started, ended]


_hooks: list[Any] = [lambda: None, lambda pid: None, lambda pid: None]


def _once(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return run_child(argv, env, tool="uv", error=UvError)


def run_child(
    argv: list[str],
    env: Mapping[str, str],
    *,
    tool: str,
    error: type[Exception],
    cwd: Path | None = None,
    timeout: float = _TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a build tool (uv, npm) as a child the supervisor knows about (``set_child_hooks``);
    its output captured. Raises ``error`` when it cannot be run or does not finish in time;
    Ctrl-C kills it too, wherever it lands: from the fork until the wait begins, a Ctrl-C (on
    the main thread, where Python delivers it) is held back and raised once the tool is known,
    so it is never left running."""
    starting, started, ended = _hooks
    held: list[int] = []
    previous = _hold_sigint(held)
    try:
        starting()
        proc = None
        try:
            proc = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            if held:  # the Ctrl-C held back meanwhile is what the user asked for
                raise KeyboardInterrupt from None
            raise error(f"cannot run {tool} ({argv[0]}): {exc.strerror or exc}") from None
        finally:
            started(proc.pid if proc is not None else None)
        try:
            _release_sigint(previous)  # from here a Ctrl-C is a KeyboardInterrupt again
            previous = None
            if held:
                raise KeyboardInterrupt
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise error(
                f"{tool} did not finish within {timeout:g}s: {' '.join(argv[1:3])}"
            ) from None
        except BaseException:
            # interrupted (Ctrl-C): the tool goes too; the build leaves only its temp dir
            proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            raise
        finally:
            ended(proc.pid)
    finally:
        _release_sigint(previous)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


_Handler = Callable[[int, Any], Any] | int | None


def _hold_sigint(held: list[int]) -> tuple[_Handler] | None:
    """On the main thread: SIGINT only noted in ``held`` until :func:`_release_sigint`; the
    handler it replaced (None elsewhere: Python delivers signals on the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return (signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum)),)


def _release_sigint(previous: tuple[_Handler] | None) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous[0])


def _looks_offline(text: str) -> bool:
    lowered = text.lower()
    return any(hint in lowered for hint in _NETWORK_HINTS)


def _tail(text: str, lines: int = 6) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:]) if kept else "(no output)"
