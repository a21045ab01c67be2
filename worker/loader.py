"""Import an extension by path, under a private module name; apply rlimits before that.

A package directory is imported from its ``__init__.py`` with ``submodule_search_locations``
set, so its relative imports (``from .impl import X``) work; a single ``.py`` file is imported
as a plain module. The module is named ``spctl_ext_<name>`` (non-identifier characters, such as
the hyphens of ``backup-daemon``, become ``_``) and is placed in ``sys.modules`` before it is
executed, as the import system itself does, so that dataclasses, pickling and submodules can
find it; a failed import removes it again.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from worker.protocol import BootSpec

__all__ = [
    "LoadError",
    "Metadata",
    "apply_rlimits",
    "check_metadata",
    "import_extension",
    "load_extension",
    "module_name",
]


class LoadError(Exception):
    """The extension cannot be loaded; the message is shown to the operator as is."""


def module_name(extension: str) -> str:
    """The ``sys.modules`` name an extension is imported under."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in extension)
    return f"spctl_ext_{safe}"


def load_extension(extension: str, path: str | Path) -> ModuleType:
    """Import the extension at ``path`` (a package directory or a ``.py`` file).

    Raises LoadError when the path is not importable, and whatever the extension's own code
    raises while it is executed (the caller reports both as a load error).
    """
    where = Path(path)
    name = module_name(extension)
    if where.is_dir():
        init = where / "__init__.py"
        if not init.is_file():
            raise LoadError(f"{where} is a directory without __init__.py")
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(where)]
        )
    elif where.is_file() and where.suffix == ".py":
        spec = importlib.util.spec_from_file_location(name, where)
    elif not where.exists():
        raise LoadError(f"{where} does not exist")
    else:
        raise LoadError(f"{where} is neither a package directory nor a .py file")
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {where}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def import_extension(spec: BootSpec) -> ModuleType:
    """Add the sys.path entries, then import the extension (on the loop thread: module code
    may call signal.signal()). Raises LoadError or what the import raises."""
    # The extension's own directory is importable (as the cwd is, unless started with -P),
    # then the extra entries, ahead of everything else.
    where = os.path.abspath(spec.path)
    home = where if os.path.isdir(where) else os.path.dirname(where)
    for entry in (home, *reversed(spec.python_path)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # Relative paths in an extension mean its own directory, wherever the supervisor runs.
    os.chdir(home)
    return load_extension(spec.name, spec.path)


Scalar = None | bool | int | float | str
Metadata = dict[str, Scalar | list[Scalar]]
_SCALARS = (type(None), bool, int, float, str)


def check_metadata(value: object, where: str) -> Metadata:
    """Validate an extension's ``metadata``: a dict of str → scalar or list of scalars.

    Tuples become lists (the wire has only arrays). Raises LoadError("bad metadata: …").
    """
    if not isinstance(value, dict):
        raise LoadError(f"bad metadata in {where}: expected a dict, got {type(value).__name__}")
    out: Metadata = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise LoadError(f"bad metadata in {where}: key {key!r} is not a string")
        if isinstance(item, _SCALARS):
            out[key] = item
        elif isinstance(item, list | tuple) and all(isinstance(x, _SCALARS) for x in item):
            out[key] = list(item)
        else:
            raise LoadError(
                f"bad metadata in {where}: {key!r} must be a string, number, bool, None "
                f"or a list of those, not {type(item).__name__}"
            )
    return out


def apply_rlimits(rlimits: Mapping[str, Any]) -> None:
    """setrlimit each ``NAME: [soft, hard]`` (None or -1 = unlimited).

    Raises LoadError naming the first limit that is unknown, malformed or refused.
    """
    import resource

    for key, value in rlimits.items():
        which = getattr(resource, f"RLIMIT_{key}", None) if isinstance(key, str) else None
        if not isinstance(which, int):
            raise LoadError(f"unknown rlimit {key!r}")
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise LoadError(f"rlimit {key} must be [soft, hard], got {value!r}")
        pair = tuple(resource.RLIM_INFINITY if v is None or v == -1 else v for v in value)
        if not all(type(v) is int for v in pair):
            raise LoadError(f"rlimit {key} must be [soft, hard] integers, got {value!r}")
        try:
            resource.setrlimit(which, (pair[0], pair[1]))
        except (ValueError, OSError) as e:
            raise LoadError(f"cannot apply rlimit {key}={list(value)}: {e}") from None


SDK_ATTRIBUTES = ("mcp", "server", "app")
"""Where a package without ``create_handler`` may export an MCP SDK server (kind ``sdk``)."""
SDK_EXPECTED = "a module-level mcp, server or app holding an MCPServer or a Server"


def sdk_attribute(module: ModuleType) -> str | None:
    """The attribute holding an MCP SDK server object when the module has no create_handler
    (then the worker serves it as kind ``sdk``); None otherwise. Imports nothing: an object
    whose class (or a base) is defined under ``mcp.server`` qualifies, and
    :func:`worker.kinds.sdk.find_server` checks it."""
    if callable(getattr(module, "create_handler", None)):
        return None
    for name in SDK_ATTRIBUTES:
        obj = getattr(module, name, None)
        if obj is not None and any(
            c.__module__.startswith("mcp.server.") for c in type(obj).__mro__
        ):
            return name
    return None
