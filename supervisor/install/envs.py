"""One locked, isolated environment per extension (DESIGN §9).

- **Lock**: the entry's requirements (``install: pypi:…`` and/or ``requirements:``) plus
  ``msgpack`` (the worker's one dependency, at the host's version) are resolved with hashes by
  ``uv pip compile`` and written to ``extensions/spctl.lock`` ``[extensions.NAME]``: ``source``,
  ``requirements`` (the entry's own), ``python`` (``X.Y`` of the interpreter spctl runs on),
  ``digest`` (sha256 of the python version and the locked package list) and ``packages``.
- **Build**: from the lock only, into ``<state_dir>/envs/<name>-<digest12>/``: ``uv venv`` on
  the interpreter spctl runs on, in a temp directory beside it, ``uv pip install
  --require-hashes --no-deps``, a copy of the ``worker`` package (and nothing else of spctl's)
  made importable by a ``.pth`` file, a completion marker, then a rename into place. A failed
  or interrupted build leaves only a ``.tmp-…`` directory that nothing uses (removed by the next
  build of that extension).
- **Match**: an entry whose requirements differ from its lock entry is refused with a message
  that says what differs and to run ``spctl lock NAME``. An entry with no lock entry at all is
  locked on its first build (``auto_lock``); ``serve`` does that, ``spctl install`` does not.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from supervisor.config import Extension
from supervisor.install.lockfile import LockError, read_lock, update_lock
from supervisor.install.uv import LockedPackage, UvError, compile_locked, install_locked, make_venv

__all__ = [
    "COMPLETE",
    "Env",
    "EnvError",
    "ensure_env",
    "env_dir",
    "host_python",
    "lock_extension",
    "locked_env",
    "needs_env",
    "remove_env",
    "unused_envs",
    "with_env",
]

SECTION = "extensions"
COMPLETE = ".spctl-complete"
_PTH = "_spctl_worker.pth"
Progress = Callable[[str], None]
LockReader = Callable[[Path], Mapping[str, Any]]


class EnvError(Exception):
    """The environment of one extension cannot be locked or built; the message says why."""


@dataclass(frozen=True)
class Env:
    """A built (or to be built) environment, as its lock entry describes it."""

    name: str
    digest: str  # "sha256:…"
    python_version: str
    packages: tuple[LockedPackage, ...]
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def complete(self) -> bool:
        return (self.path / COMPLETE).is_file()


def needs_env(ext: Extension) -> bool:
    return ext.environment is not None


def host_python() -> str:
    """``X.Y`` of the interpreter spctl runs on (the envs are built on it)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def requirements_of(ext: Extension) -> list[str]:
    """What the entry itself asks for, in order (what the lock records as ``requirements``)."""
    spec = ext.environment
    if spec is None:
        raise EnvError(f"{ext.name}: has neither install: nor requirements:")
    if spec.install_kind == "npm":
        raise EnvError(
            f"{ext.name}: install: {spec.install}: npm packages are not built yet by this "
            f"spctl (only pypi:NAME==VERSION is)"
        )
    if spec.install_kind == "file":
        raise EnvError(
            f"{ext.name}: install: {spec.install}: installing a local wheel/sdist is not built "
            f"yet by this spctl (only pypi:NAME==VERSION is)"
        )
    found = [spec.package] if spec.package else []
    return [*found, *spec.requirements]


def digest_of(
    python_version: str, packages: tuple[LockedPackage, ...] | list[LockedPackage]
) -> str:
    body = json.dumps(
        {
            "python": python_version,
            "packages": [[p.name, p.version, sorted(p.hashes)] for p in packages],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def env_dir(state_dir: Path, name: str, digest: str) -> Path:
    return state_dir / "envs" / f"{name}-{digest.removeprefix('sha256:')[:12]}"


# -- lock -------------------------------------------------------------------------------------


def lock_extension(
    ext: Extension, extensions_dir: Path, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Resolve the entry's requirements and write ``[extensions.NAME]``; returns the table."""
    wanted = requirements_of(ext)
    python_version = host_python()
    say = progress or (lambda _: None)
    say(f"resolving {', '.join(wanted)} for Python {python_version}")
    with tempfile.TemporaryDirectory(prefix="spctl-lock-") as work:
        try:
            packages = compile_locked([*wanted, _msgpack_requirement()], python_version, Path(work))
        except UvError as exc:
            raise EnvError(f"{ext.name}: cannot lock: {exc}") from None
    table: dict[str, Any] = {
        "source": ext.environment.install if ext.environment and ext.environment.install else "",
        "requirements": wanted,
        "python": python_version,
        "digest": digest_of(python_version, packages),
        "packages": [p.to_lock() for p in packages],
    }
    try:
        update_lock(extensions_dir, SECTION, ext.name, table)
    except (LockError, OSError) as exc:
        raise EnvError(f"{ext.name}: cannot write the lock: {exc}") from None
    say(f"locked {len(packages)} packages ({table['digest'][:19]}…)")
    return table


def _msgpack_requirement() -> str:
    try:
        return f"msgpack=={metadata.version('msgpack')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - spctl depends on it
        return "msgpack"


def locked_env(
    ext: Extension, extensions_dir: Path, state_dir: Path, *, read: LockReader = read_lock
) -> Env | None:
    """The env the lock says ``ext`` runs in; None when the lock has no entry for it. A lock
    entry that does not match the entry, or is not consistent in itself, raises ``EnvError``.
    ``read``: how the lock is read (the core's reads it again only when it changed)."""
    where = f"{extensions_dir / 'spctl.lock'} [extensions.{ext.name}]"
    try:
        table = read(extensions_dir).get(SECTION, {}).get(ext.name)
    except LockError as exc:
        raise EnvError(f"{ext.name}: {exc}") from None
    if table is None:
        return None
    fix = f"run `spctl lock {ext.name}`"
    if not isinstance(table, Mapping):
        raise EnvError(f"{where}: not a table; {fix}")
    wanted = requirements_of(ext)
    if table.get("requirements") != wanted:
        raise EnvError(
            f"{where}: locked for requirements {table.get('requirements')!r}, the entry asks for "
            f"{wanted!r}; {fix}"
        )
    if table.get("python") != host_python():
        raise EnvError(
            f"{where}: locked for Python {table.get('python')!r}, spctl runs on "
            f"{host_python()}; {fix}"
        )
    packages = _packages(table.get("packages"), where, fix)
    names = {p.name for p in packages}
    if "msgpack" not in names:
        raise EnvError(f"{where}: has no msgpack (the worker needs it); {fix}")
    digest = table.get("digest")
    if digest != digest_of(host_python(), packages):
        raise EnvError(
            f"{where}: digest {digest!r} does not match its packages (edited by hand?); {fix}"
        )
    return Env(ext.name, digest, host_python(), packages, env_dir(state_dir, ext.name, digest))


def _packages(raw: object, where: str, fix: str) -> tuple[LockedPackage, ...]:
    if not isinstance(raw, list) or not raw:
        raise EnvError(f"{where}: packages must be a non-empty list of tables; {fix}")
    found = []
    for index, item in enumerate(raw):
        ok = isinstance(item, Mapping) and isinstance(item.get("name"), str)
        ok = ok and isinstance(item.get("version"), str) and isinstance(item.get("hashes"), list)
        hashes = item.get("hashes") if ok and isinstance(item, Mapping) else None
        if (
            not ok
            or not hashes
            or not all(isinstance(h, str) and h.startswith("sha256:") for h in hashes)
        ):
            raise EnvError(
                f"{where}: packages[{index}] needs name, version and sha256 hashes; {fix}"
            )
        assert isinstance(item, Mapping)
        found.append(LockedPackage(item["name"], item["version"], tuple(hashes)))
    return tuple(found)


# -- build ------------------------------------------------------------------------------------


def ensure_env(
    ext: Extension,
    extensions_dir: Path,
    state_dir: Path,
    *,
    auto_lock: bool = True,
    progress: Progress | None = None,
    read: LockReader = read_lock,
) -> Env:
    """The env of ``ext``, built from the lock if it is not there yet."""
    say = progress or (lambda _: None)
    env = locked_env(ext, extensions_dir, state_dir, read=read)
    if env is None:
        if not auto_lock:
            raise EnvError(
                f"{ext.name}: no entry in {extensions_dir / 'spctl.lock'}; run `spctl lock "
                f"{ext.name}`"
            )
        lock_extension(ext, extensions_dir, progress=say)
        env = locked_env(ext, extensions_dir, state_dir, read=read)
        assert env is not None
    if not env.complete:
        build_env(env, progress=say)  # installs the current shim
    else:
        _ensure_shim(env)
    return env


def build_env(env: Env, *, progress: Progress | None = None) -> None:
    """Build ``env`` beside where it goes, then rename it into place."""
    say = progress or (lambda _: None)
    parent = env.path.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".tmp-{env.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # an interrupted build: never used
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{env.name}-", dir=parent))
    try:
        target = work / "env"
        say(f"building the environment ({len(env.packages)} packages)")
        make_venv(target, sys.executable)
        install_locked(target / "bin" / "python", env.packages, work)
        _install_shim(target)
        (target / COMPLETE).write_text(env.digest + "\n", encoding="utf-8")
        try:
            os.rename(target, env.path)
        except OSError:
            if not env.complete:  # not another build of the same env finishing first
                raise
        say(f"environment ready: {env.path}")
    except UvError as exc:
        raise EnvError(f"{env.name}: cannot build the environment: {exc}") from None
    except OSError as exc:
        raise EnvError(f"{env.name}: cannot build the environment: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python*/site-packages"))
    if not found:
        raise EnvError(f"{venv}: no lib/python*/site-packages")
    return found[0]


@functools.cache
def _worker_package() -> tuple[Path, str]:
    """Where the worker package this spctl runs is, and the digest of its files: computed once
    per process (it was rehashed at every start of every extension with an environment)."""
    import worker

    source = Path(worker.__file__).resolve().parent
    return source, _worker_digest(source)


def _worker_digest(source: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        h.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _install_shim(venv: Path) -> None:
    """Copy the worker package into ``venv/spctl-shim/<digest>/worker`` and point a ``.pth``
    at it (atomically): only ``worker`` becomes importable, never ``supervisor``."""
    source, digest = _worker_package()
    shim = venv / "spctl-shim" / digest
    if not (shim / "worker").is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".shim-", dir=venv))
        try:
            shutil.copytree(
                source, tmp / "worker", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
            shim.parent.mkdir(exist_ok=True)
            try:
                os.rename(tmp, shim)
            except OSError:
                if not (shim / "worker").is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    site = _site_packages(venv)
    pth, line = site / _PTH, os.path.relpath(shim, site)  # relative: the env is renamed
    if not pth.is_file() or pth.read_text(encoding="utf-8").strip() != line:
        tmp_pth = pth.with_name(f".{_PTH}.{os.getpid()}")
        tmp_pth.write_text(f"{line}\n", encoding="utf-8")
        os.replace(tmp_pth, pth)


def _ensure_shim(env: Env) -> None:
    """An env built by an older spctl gets the current worker package (cheap when current)."""
    try:
        _install_shim(env.path)
    except OSError as exc:
        raise EnvError(f"{env.name}: cannot install the worker shim: {exc}") from None


def with_env(ext: Extension, env: Env) -> Extension:
    """``ext`` as its worker runs: on the env's python and, for ``install:``, the command's
    first word found in the env's ``bin/``."""
    command = ext.command
    if (
        command
        and ext.environment is not None
        and ext.environment.install
        and "/" not in command[0]
    ):
        program = env.bin / command[0]
        if not program.exists():
            scripts = sorted(
                p.name for p in env.bin.iterdir() if not p.name.startswith(_VENV_SCRIPTS)
            )
            raise EnvError(
                f"{ext.name}: command: {command[0]} is not in the environment's bin/ "
                f"(it has: {', '.join(scripts) or 'nothing'})"
            )
        command = (str(program), *command[1:])
    return replace(ext, python=env.python, command=command)


_VENV_SCRIPTS = ("python", "activate", "deactivate", "pydoc")  # prefixes: not the server


# -- gc ---------------------------------------------------------------------------------------


def unused_envs(extensions_dir: Path, state_dir: Path) -> list[Path]:
    """Environments under ``state_dir/envs`` that no ``[extensions.*]`` entry of the lock names
    (and leftovers of interrupted builds)."""
    try:
        tables = read_lock(extensions_dir).get(SECTION, {})
    except LockError as exc:
        raise EnvError(str(exc)) from None
    keep = {
        env_dir(state_dir, name, table["digest"]).name
        for name, table in tables.items()
        if isinstance(table, Mapping) and isinstance(table.get("digest"), str)
    }
    envs = state_dir / "envs"
    if not envs.is_dir():
        return []
    # .tmp-…: a build under way (or interrupted: removed by the next build of it)
    found = (p for p in envs.iterdir() if p.is_dir() and not p.name.startswith(".tmp-"))
    return sorted(p for p in found if p.name not in keep)


def remove_env(path: Path) -> None:
    """Rename it out of the way first (a half-removed env is never taken for a built one)."""
    doomed = path.with_name(f".tmp-gc-{path.name}")
    os.rename(path, doomed)
    shutil.rmtree(doomed)
