"""One locked, isolated environment per extension (DESIGN §9): built from its lock entry
(:mod:`supervisor.install.envlock`), used, collected.

- **Build**: from the lock only, into ``<state_dir>/envs/<name>-<digest12>/``: ``uv venv`` on
  the interpreter spctl runs on, in a temp directory beside it, ``uv pip install
  --require-hashes --no-deps``, a copy of the ``worker`` package (and nothing else of spctl's)
  made importable by a ``.pth`` file, a completion marker, then a rename into place. A failed
  or interrupted build leaves only a ``.tmp-…`` directory that nothing uses (removed by the next
  build of that extension).
- **npm** (``install: npm:…``): the same, with ``npm ci --ignore-scripts`` from the locked
  ``package-lock.json`` (:mod:`supervisor.install.npm`) instead of a venv; no worker shim (the
  worker runs on spctl's own interpreter, as for any ``command:``).
- **Use**: ``with_env`` runs the entry on the env's python (and its command from the env's bin/).
- **Collect**: ``unused_envs`` / ``remove_env`` (``spctl gc``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from supervisor.config import Extension
from supervisor.install.envlock import (
    COMPLETE,
    SECTION,
    Env,
    EnvError,
    LockReader,
    Progress,
    env_dir,
    lock_extension,
    locked_env,
)
from supervisor.install.lockfile import LockError, read_lock
from supervisor.install.npm import NpmError
from supervisor.install.npm import install_locked as npm_install_locked
from supervisor.install.uv import UvError, install_locked, make_venv

__all__ = [
    "Env",
    "EnvError",
    "build_env",
    "ensure_env",
    "remove_env",
    "unused_envs",
    "with_env",
]

_PTH = "_spctl_worker.pth"


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
    elif env.kind != "npm":
        _ensure_shim(env)
    return env


def build_env(env: Env, *, progress: Progress | None = None) -> None:
    """Build ``env`` beside where it goes, then rename it into place."""
    say = progress or (lambda _: None)
    parent = env.path.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".tmp-{env.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # an interrupted build: never used
    # named first, made inside the try: a Ctrl-C right after the mkdir still removes it
    work = parent / f".tmp-{env.name}-{secrets.token_hex(6)}"
    try:
        work.mkdir(mode=0o700)
        target = work / "env"
        if env.kind == "npm":
            say(f"building the environment ({env.size} npm packages)")
            npm_install_locked(target, env.requirements, env.npm_packages)
        else:
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
    except (UvError, NpmError) as exc:
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
    first word found in the env's ``bin/`` (npm: ``node_modules/.bin/``, and the worker on
    spctl's own interpreter)."""
    command = ext.command
    if (
        command
        and ext.environment is not None
        and ext.environment.install
        and "/" not in command[0]
    ):
        program = env.bin / command[0]
        if not program.exists():
            found = env.bin.iterdir() if env.bin.is_dir() else iter(())
            scripts = sorted(p.name for p in found if not p.name.startswith(_VENV_SCRIPTS))
            where = "node_modules/.bin/" if env.kind == "npm" else "bin/"
            raise EnvError(
                f"{ext.name}: command: {command[0]} is not in the environment's {where} "
                f"(it has: {', '.join(scripts) or 'nothing'})"
            )
        command = (str(program), *command[1:])
    if env.kind == "npm":
        return replace(ext, command=command)
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
