"""What one extension's worker may see (DESIGN §11): its environment and its sandbox policy.

The environment is systemd's model: a clean one, never the supervisor's. A worker gets
``PATH``, the locale (``LANG``, ``LANGUAGE``, ``LC_*``), ``TZ``, ``HOME`` (its state directory),
``USER``/``LOGNAME``, ``TMPDIR`` (a private directory in its state directory),
``EXTENSION_STATE_DIR``, the variables its entry names in ``passEnv:``, and its ``env:``,
which wins over all of these (``HOME`` too). So a secret reaches an extension only through its
own entry: ``env: {GITHUB_TOKEN: "${GITHUB_TOKEN}"}``.

The sandbox policy is the extension's part of the Landlock rules (``worker.sandbox`` adds the
system's and the interpreter's): read-only its own directory and its command's installation
(the venv or npm prefix the command lives in), read-write its state directory, plus the
entry's ``readable``/``writable``; ``private`` names what the interpreter's own paths must not
open up (the extensions directory, the state and socket directories).
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from supervisor.config import Extension
from supervisor.control.paths import socket_path, state_dir

__all__ = [
    "DEFAULT_PATH",
    "PRIVATE_ENV",
    "command_installs",
    "sandbox_policy",
    "state_dirs",
    "worker_environment",
]

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

# What belongs to the supervisor alone: systemd's notify and socket-activation protocol, and
# where the control socket and state live. Never passed to a child, not even by passEnv.
PRIVATE_ENV = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "SPCTL_SOCKET",
        "RUNTIME_DIRECTORY",
        "STATE_DIRECTORY",
    }
)
_LOCALE = frozenset({"LANG", "LANGUAGE", "TZ"})


def state_dirs(ext: Extension) -> tuple[Path, Path]:
    """The extension's state directory and its private TMPDIR inside it (not created)."""
    state = state_dir() / "extensions" / ext.name
    return state, state / "tmp"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def worker_environment(
    ext: Extension, environ: Mapping[str, str], state: Path, tmp: Path, user: str
) -> dict[str, str]:
    """The whole environment of ``ext``'s worker (pure: ``environ`` is the supervisor's)."""
    env = {"PATH": environ.get("PATH") or DEFAULT_PATH}
    env.update({k: v for k, v in environ.items() if k in _LOCALE or k.startswith("LC_")})
    env.update(
        HOME=str(state), USER=user, LOGNAME=user, TMPDIR=str(tmp), EXTENSION_STATE_DIR=str(state)
    )
    for name in ext.pass_env:
        if name in environ and name not in PRIVATE_ENV:
            env[name] = environ[name]
    env.update(ext.env)
    env["EXTENSION_STATE_DIR"] = str(state)  # not overridable: the supervisor made it
    return env


def sandbox_policy(ext: Extension, state: Path, path_env: str) -> dict[str, Any]:
    """The wire form of ``worker.sandbox.Policy`` for ``ext`` (``path_env``: the worker's PATH,
    to find a stdio command's installation)."""
    box = ext.sandbox
    if box.off:
        return {"filesystem": "off", "network": "any"}
    readable: list[Path] = []
    if ext.path is not None:
        readable.append(ext.path)  # its own directory (or file), read-only
    if ext.command is not None:
        readable.extend(command_installs(ext.command, path_env))
    readable.extend(box.readable)
    if ext.python is not None:
        readable.extend(_venv_of(ext.python))
    registry = ext.source.file.parent
    private = [registry, state_dir(), socket_path().parent]
    return {
        "filesystem": box.filesystem,
        "network": box.network,
        "readable": _unique(readable),
        "writable": _unique([state, *box.writable]),
        "required": box.required,
        "private": _unique(private),
    }


def command_installs(command: Iterable[str], path_env: str) -> list[Path]:
    """Where a stdio command lives, read-only for it: for its program (found on ``path_env``)
    and each absolute path among its arguments, the venv it is in (and that venv's base
    interpreter), else the npm prefix above its ``node_modules``, else the file itself when it
    is outside the system directories the sandbox opens anyway."""
    words = list(command)
    found: list[Path] = []
    for index, word in enumerate(words):
        if index == 0:
            program = shutil.which(word, path=path_env)
            if program is None:
                continue
            candidates = [Path(os.path.abspath(program))]
        elif word.startswith("/") and os.path.exists(word):
            candidates = [Path(word)]
        else:
            continue
        candidates.append(candidates[0].resolve())
        for path in candidates:
            found.extend(p for p in _installation(path) if p not in found)
    return found


def _installation(path: Path) -> list[Path]:
    venv = _venv_of(path)
    if venv:
        return venv
    modules = [p for p in path.parents if p.name == "node_modules"]
    if modules:
        return [modules[-1].parent]
    if str(path).startswith(("/usr/", "/bin/", "/sbin/", "/lib")):
        return []
    return [path]


def _venv_of(path: Path) -> list[Path]:
    """The venv ``path`` is in and the prefix of its base interpreter, or []."""
    for parent in path.parents:
        cfg = parent / "pyvenv.cfg"
        if cfg.is_file():
            found = [parent]
            try:
                lines = cfg.read_text(errors="replace").splitlines()
            except OSError:
                return found
            for line in lines:
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    found.append(Path(value.strip()).parent)  # …/bin → the prefix
            return found
    return []


def _unique(paths: Iterable[Path]) -> list[str]:
    return list(dict.fromkeys(os.path.abspath(p) for p in paths))
