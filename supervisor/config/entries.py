"""One entry of ``servers:`` or ``modules:`` → an ``Extension``, or the problems with it.

Each field is checked on its own so that one run reports everything wrong with an entry; the
``Extension`` is built only when nothing was. Checks that need the other entries (unique
names, ``dependsOn``, ``provides``) are done by ``registry``; this module records what they
need on the ``Entry``. Paths are checked with ``stat``/``resolve`` only: nothing is imported.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.config import schema
from supervisor.config.blocks import (
    HEADER_NAME,
    boolean,
    positive,
    read_auth,
    read_filter,
    read_limits,
    read_restart,
    read_sandbox,
    read_url,
)
from supervisor.config.envspec import read_environment
from supervisor.config.fields import Problem, Reader, join
from supervisor.config.hooks import merge_hooks, read_hooks
from supervisor.config.load import Mark, MarkedMap
from supervisor.config.values import FrozenDict, Secret, parse_duration, show

__all__ = ["ENTRY_KEYS", "NAME_MAX", "NAME_PATTERN", "Entry", "read_entry"]

NAME_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
NAME_MAX = 48
ENTRY_KEYS = (
    *("name", "type", "enabled", "path", "command", "python", "url", "auth", "headers"),
    *("config", "env", "limits", "restart", "timeout", "startTimeout", "stopTimeout"),
    *("lazy", "idleTimeout", "dependsOn", "moduleType", "provides", "user", "group"),
    *("sandbox", "passEnv", "tools", "prompts", "resources"),
    *("signature", "allowedSigners"),
    "hooks",
    *("install", "requirements"),
)
FILTERS = ("tools", "prompts", "resources")  # servers only
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NOWHERE = Mark(0, 0)
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to setuid()


@dataclass
class Entry:
    """What one list item yielded; ``extension`` is None when it has problems."""

    file: Path
    section: str
    index: int
    mark: Mark
    name: str | None = None  # a well-formed name, usable to refer to the entry
    name_mark: Mark = _NOWHERE
    extension: schema.Extension | None = None
    problems: list[Problem] = field(default_factory=list)
    depends: list[tuple[str, Mark, str]] = field(default_factory=list)
    provides: list[tuple[str, Mark, str]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{self.section}[{self.index}]"


def read_entry(
    item: Any,
    mark: Mark,
    *,
    file: Path,
    section: str,
    index: int,
    root: Path,
    environ: Mapping[str, str],
    file_hooks: schema.Hooks | None = None,
) -> Entry:
    """Validate one item of a ``servers:``/``modules:`` list. ``root`` must be resolved;
    ``file_hooks``: the file's top-level ``hooks:`` (the entry's own replace them)."""
    entry = Entry(file, section, index, mark)
    r, p = Reader(environ), entry.prefix
    if not isinstance(item, MarkedMap):
        r.fail(mark, p, f"expected a mapping (name: …, type: …), got {show(item)}")
        entry.problems = r.problems
        return entry
    r.keys(item, ENTRY_KEYS, p)
    name = r.string(item, "name", p, required=True)
    if name is not None:
        entry.name_mark = item.mark_of("name")
        if len(name) <= NAME_MAX and NAME_PATTERN.fullmatch(name):
            # A duplicated `name:` key leaves the entry without one name to blame.
            if not any(dup.key == "name" for dup in item.duplicates):
                entry.name = name
        else:
            r.fail(
                entry.name_mark,
                join(p, "name"),
                f"expected lowercase letters, digits and single hyphens (like my-server), "
                f"at most {NAME_MAX} characters, got {show(name)}",
            )
    kind = r.choice(item, "type", p, schema.EXTENSION_TYPES, required=True)
    module_type = _section_rules(r, item, section, p)
    _type_rules(r, item, kind, p)
    command = _command(r, item, p) if kind != "remote" else None
    path = _path(r, item, p, root, has_command=command is not None) if kind != "remote" else None
    url = read_url(r, item, "url", p, required=kind == "remote") if kind != "local" else None
    auth = read_auth(r, item, p) if kind != "local" else None
    headers: FrozenDict[str, str | Secret] = FrozenDict()
    if kind != "local":
        headers = r.string_map(item, "headers", p, key_pattern=HEADER_NAME, what="header name")
    env = r.string_map(item, "env", p, key_pattern=_ENV_NAME, what="environment variable name")
    pass_env = _unique_strings(r, item, "passEnv", p)
    for variable, variable_mark, variable_field in pass_env:
        if not _ENV_NAME.fullmatch(variable):
            r.fail(variable_mark, variable_field, f"{show(variable)} is not a valid variable name")
    sandbox = read_sandbox(r, item, p, root, remote=kind == "remote")
    config = _config(r, item, p)
    python = _python(r, item, p, root)
    signature, allowed_signers = _signing(r, item, p, root)
    environment = read_environment(r, item, p, root, section=section, kind=kind)
    run_as = _run_as(r, item, p)
    limits = read_limits(r, item, p)
    restart = read_restart(r, item, p)
    filters = {key: read_filter(r, item, key, p) for key in FILTERS}
    hooks = merge_hooks(file_hooks, read_hooks(r, item, p, root))
    for values, key in ((entry.depends, "dependsOn"), (entry.provides, "provides")):
        values.extend(_unique_strings(r, item, key, p))
    for service, service_mark, service_field in entry.provides:
        if not _SERVICE_NAME.fullmatch(service):
            r.fail(service_mark, service_field, f"{show(service)} is not a valid service name")
    lazy = r.typed(item, "lazy", p, boolean, False)
    idle_timeout = r.typed(item, "idleTimeout", p, positive(parse_duration), None)
    if idle_timeout is not None and not lazy:
        # only a lazy server comes back by itself on the next call
        r.fail(item.mark_of("idleTimeout"), join(p, "idleTimeout"), "needs lazy: true")
    extension = schema.Extension(
        name=name or "",
        section=section,
        type=kind or "local",
        source=schema.Source(file, mark.line, mark.column),
        enabled=r.typed(item, "enabled", p, boolean, True),
        path=path,
        url=url,
        auth=auth,
        headers=headers,
        config=config,
        module_type=module_type,
        provides=tuple(service for service, _, _ in entry.provides),
        limits=limits,
        restart=restart,
        timeout=r.typed(item, "timeout", p, positive(parse_duration), 30.0),
        stop_timeout=r.typed(item, "stopTimeout", p, positive(parse_duration), 10.0),
        start_timeout=r.typed(item, "startTimeout", p, positive(parse_duration), 30.0),
        lazy=lazy,
        idle_timeout=idle_timeout,
        command=command,
        env=FrozenDict((k, v.reveal() if isinstance(v, Secret) else v) for k, v in env.items()),
        python=python,
        run_as=run_as,
        depends_on=tuple(dep for dep, _, _ in entry.depends),
        sandbox=sandbox,
        pass_env=tuple(variable for variable, _, _ in pass_env),
        tools=filters["tools"],
        prompts=filters["prompts"],
        resources=filters["resources"],
        signature=signature,
        allowed_signers=allowed_signers,
        hooks=hooks,
        environment=environment,
    )
    entry.problems = r.problems
    entry.extension = None if r.problems else extension
    return entry


def _section_rules(r: Reader, item: MarkedMap, section: str, p: str) -> str | None:
    """``moduleType``/``provides`` belong to modules, ``command`` to servers."""
    if section == "servers":
        for key in ("moduleType", "provides"):
            if key in item:
                r.fail(item.key_marks[key], join(p, key), "is only for modules (modules.yaml)")
        return None
    for key in ("command", *FILTERS):
        if key in item:
            r.fail(item.key_marks[key], join(p, key), "is only for servers (servers.yaml)")
    module_type = r.choice(item, "moduleType", p, schema.MODULE_TYPES, required=True)
    if module_type == "daemon" and "provides" in item:
        r.fail(item.key_marks["provides"], join(p, "provides"), "is only for moduleType plugin")
    return module_type


def _type_rules(r: Reader, item: MarkedMap, kind: str | None, p: str) -> None:
    forbidden = {
        "local": ("url", "auth", "headers"),
        "remote": ("path", "command", "signature", "allowedSigners"),  # no files to sign
    }
    for key in forbidden.get(kind or "", ()):
        if key in item:
            other = "remote" if kind == "local" else "local"
            r.fail(item.key_marks[key], join(p, key), f"is only for type {other}")
    if kind == "local" and item.get("path") is None and item.get("command") is None:
        r.fail(
            item.mark,
            join(p, "path"),
            "is required for type local: a Python package or .py file inside the extensions "
            "directory (or give command: to run a stdio MCP server)",
        )


def _command(r: Reader, item: MarkedMap, p: str) -> tuple[str, ...] | None:
    if "command" not in item or item["command"] is None:
        return None
    argv = r.strings(item, "command", p)
    if argv is None:
        return None
    if not argv or not argv[0][0]:
        r.fail(item.mark_of("command"), join(p, "command"), "expected a non-empty list of strings")
    for arg, mark, arg_field in argv:
        if "\0" in arg:
            r.fail(mark, arg_field, "must not contain NUL characters")
    return tuple(arg for arg, _, _ in argv)


def _inside(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def _path(r: Reader, item: MarkedMap, p: str, root: Path, *, has_command: bool) -> Path | None:
    text = r.string(item, "path", p)
    if text is None:
        return None
    mark, field_, shown = item.mark_of("path"), join(p, "path"), _short(text)
    if not text or "\0" in text:
        r.fail(mark, field_, "expected a relative path inside the extensions directory")
        return None
    if Path(text).is_absolute():
        r.fail(mark, field_, f"must be relative to {root.name}/, got an absolute path ({shown})")
        return None
    try:
        target = (root / text).resolve()  # follows symlinks
        problem = _path_problem(root, text, target, has_command=has_command)
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long, no permission
        target, problem = root, f"cannot be checked: {getattr(exc, 'strerror', None) or exc}"
    if problem is not None:
        r.fail(mark, field_, problem)
    return target


def _path_problem(root: Path, text: str, target: Path, *, has_command: bool) -> str | None:
    """What is wrong with the resolved ``target`` of ``path: text``, or None."""
    shown = _short(text)
    if not _inside(target, root):
        if _inside(Path(os.path.normpath(root / text)), root):  # inside by name: a symlink
            return f"resolves outside {root.name}/ ({shown} -> {target})"
        return f"resolves outside {root.name}/ ({shown})"
    if not target.exists():
        return f"does not exist ({shown})"
    if has_command:
        return None  # the working directory of a stdio server: any file or directory will do
    if target.is_dir():
        if (target / "__init__.py").is_file():
            return None
        return f"is a directory without __init__.py, not a package ({shown})"
    if not (target.is_file() and target.suffix == ".py"):
        return f"expected a Python package directory or a .py file ({shown})"
    return None


def _config(r: Reader, item: MarkedMap, p: str) -> Mapping[str, Any]:
    found = r.mapping(item, "config", p)
    if found is None:
        return FrozenDict()
    frozen: Mapping[str, Any] = r.plain(found, item.mark_of("config"), join(p, "config"))
    return frozen


def _python(r: Reader, item: MarkedMap, p: str, root: Path) -> Path | None:
    text = r.string(item, "python", p)
    if text is None:
        return None
    mark, field_ = item.mark_of("python"), join(p, "python")
    # Not resolved: a venv's python is a symlink, and following it would leave the venv.
    interpreter = Path(os.path.abspath(root / text)) if text and "\0" not in text else None
    try:
        if interpreter is None or not interpreter.exists():
            problem: str | None = "interpreter not found"
        elif not interpreter.is_file():
            problem = "is not a file"
        elif not os.access(interpreter, os.X_OK):
            problem = "is not executable"
        else:
            problem = None
    except OSError as exc:
        problem = f"cannot be checked: {exc.strerror or exc}"
    if problem is not None:
        r.fail(mark, field_, f"{problem} ({_short(text)})")
    return interpreter


def _signing(r: Reader, item: MarkedMap, p: str, root: Path) -> tuple[Path | None, Path | None]:
    """``signature:`` and ``allowedSigners:``: given together, paths inside the extensions
    directory. Whether the files exist and verify is checked before each start (a missing
    signature is the extension's failure, not the registry's)."""
    found: dict[str, Path | None] = {}
    for key in ("signature", "allowedSigners"):
        text = r.string(item, key, p)
        found[key] = None
        if text is None:
            continue
        mark, field_ = item.mark_of(key), join(p, key)
        if not text or "\0" in text or Path(text).is_absolute():
            r.fail(mark, field_, "expected a relative path inside the extensions directory")
            continue
        target = Path(os.path.normpath(root / text))
        if not _inside(target, root):
            r.fail(mark, field_, f"resolves outside {root.name}/ ({_short(text)})")
            continue
        found[key] = target
    for key, other in (("signature", "allowedSigners"), ("allowedSigners", "signature")):
        if item.get(key) is not None and item.get(other) is None:
            r.fail(item.mark_of(key), join(p, key), f"needs {other}: as well")
    return found["signature"], found["allowedSigners"]


def _run_as(r: Reader, item: MarkedMap, p: str) -> schema.RunAs | None:
    """``user:`` (name or uid) and ``group:`` (name or gid; default: the user's primary group),
    resolved now through the user and group databases, so a typo is a load error."""
    user, group = _account(r, item, "user", p), _account(r, item, "group", p)
    if item.get("user") is None:
        if item.get("group") is not None:
            r.fail(item.mark_of("group"), join(p, "group"), "needs user: (whose group it sets)")
        return None
    if user is None:
        return None
    mark, field_ = item.mark_of("user"), join(p, "user")
    try:
        entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except KeyError:
        if not isinstance(user, int):
            r.fail(mark, field_, f"unknown user {show(user)} (not in the user database)")
            return None
        entry = None
    gid: int | None = entry.pw_gid if entry is not None else None
    if isinstance(group, int):
        gid = group
    elif isinstance(group, str):
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            problem = f"unknown group {show(group)} (not in the group database)"
            r.fail(item.mark_of("group"), join(p, "group"), problem)
            return None
    elif item.get("group") is not None:
        return None  # group: was given and is wrong: already reported
    if gid is None:
        r.fail(mark, field_, f"uid {user} is not in the user database: give its group: too")
        return None
    uid = entry.pw_uid if entry is not None else user
    assert isinstance(uid, int)  # a name without an entry was refused above
    return schema.RunAs(user=str(user), uid=uid, gid=gid)


def _account(r: Reader, item: MarkedMap, key: str, p: str) -> int | str | None:
    """A name or a numeric id (an integer, or a string of digits), or None."""

    def name_or_id(value: object) -> int | str | None:
        if isinstance(value, str):
            text = value.strip()
            if not (text.isascii() and text.isdigit()):
                if "\0" in text:  # the databases raise ValueError on it, not KeyError
                    raise ValueError(f"a {key} name cannot contain a NUL character")
                if text:
                    return text
                raise ValueError(f"expected a {key} name or a numeric id, got {show(value)}")
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a {key} name or a numeric id, got {show(value)}")
        if not 0 <= value <= _MAX_ID:
            raise ValueError(f"expected a numeric id from 0 to {_MAX_ID}, got {value}")
        return value

    return r.typed(item, key, p, name_or_id, None)


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _unique_strings(r: Reader, item: MarkedMap, key: str, p: str) -> list[tuple[str, Mark, str]]:
    seen: set[str] = set()
    items = []
    for value, mark, value_field in r.strings(item, key, p) or ():
        if value in seen:
            r.fail(mark, value_field, f"{show(value)} is listed twice")
        else:
            seen.add(value)
            items.append((value, mark, value_field))
    return items
