"""``load_registry``: the extensions directory → a ``LoadResult`` (valid extensions + errors).

Order of work: the directory must exist; each of ``servers.yaml``/``modules.yaml`` that exists
is read (``load``) and its top level checked; each list item is validated on its own
(``entries``); then the checks that span entries run: names unique across both files,
``provides`` unique across modules, every ``dependsOn`` names an entry, no dependency cycles,
and an entry that depends on an invalid one is itself invalid (so the registry is closed under
``dependsOn``). Errors are sorted by file, line and column. Nothing here raises for bad input.
"""

from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.config.entries import Entry, read_entry
from supervisor.config.errors import ConfigError
from supervisor.config.fields import Problem, Reader, suggest
from supervisor.config.hooks import read_hooks
from supervisor.config.load import Mark, MarkedList, MarkedMap, parse_text, read_file
from supervisor.config.schema import SECTIONS, Extension, Hooks, LoadResult, Registry
from supervisor.config.values import FrozenDict, show

__all__ = ["load_registry"]


def load_registry(
    root: Path | str,
    environ: Mapping[str, str] | None = None,
    *,
    texts: Mapping[str, str] | None = None,
) -> LoadResult:
    """Load and validate ``root/servers.yaml`` and ``root/modules.yaml``.

    Either file may be absent (it contributes nothing; so does an empty file); a missing
    ``root`` is a fatal error. ``${VAR}`` references are expanded from ``environ`` (default
    ``os.environ``). Reads the two files and stats paths; imports and runs nothing.
    ``texts``: the content to validate instead of a file, by section (``spctl add`` checks
    the registry it is about to write).
    """
    environ = os.environ if environ is None else environ
    directory = Path(root).absolute()
    try:
        problem = None if directory.is_dir() else "extensions directory not found"
        if problem is not None and directory.exists():
            problem = "is not a directory"
        resolved = directory.resolve()
    except (OSError, RuntimeError) as exc:
        problem = f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
    if problem is not None:
        return LoadResult(Registry(directory), (ConfigError(directory, 0, 0, "", problem),))
    file_errors: list[ConfigError] = []
    entries: list[Entry] = []
    for section in SECTIONS:
        file = directory / f"{section}.yaml"
        if texts is not None and section in texts:
            parsed = parse_text(texts[section])
        elif not _present(file, file_errors):
            continue
        else:
            parsed = read_file(file)
        for found in parsed.problems:
            file_errors.append(ConfigError(file, found.line, found.column, "", found.message))
        file_hooks = _file_hooks(parsed.data, file, resolved, environ, file_errors)
        for index, (item, mark) in enumerate(_items(parsed.data, file, section, file_errors)):
            entries.append(
                read_entry(
                    item,
                    mark,
                    file=file,
                    section=section,
                    index=index,
                    root=resolved,
                    environ=environ,
                    file_hooks=file_hooks,
                )
            )
    _check_across(entries)
    return _result(resolved, entries, file_errors)


def _present(file: Path, errors: list[ConfigError]) -> bool:
    """Whether to read ``file``: it exists, or is a dangling symlink (read_file reports it)."""
    misspelt = file.with_suffix(".yml")
    try:
        if file.exists() or file.is_symlink():
            return True
        if misspelt.exists():
            errors.append(ConfigError(misspelt, 0, 0, "", f"is not read: rename it to {file.name}"))
    except OSError as exc:
        errors.append(ConfigError(file, 0, 0, "", f"cannot be read: {exc.strerror or exc}"))
    return False


def _items(
    data: Any, file: Path, section: str, errors: list[ConfigError]
) -> list[tuple[Any, Mark]]:
    """The list items under the top-level ``section:`` key; top-level problems go to errors."""
    if data is None:
        return []  # an empty file (or only comments): no entries
    if not isinstance(data, MarkedMap):
        mark = data.mark if isinstance(data, MarkedList) else Mark(1, 1)
        message = f"expected a mapping with a '{section}:' list at the top, got {show(data)}"
        errors.append(ConfigError(file, mark.line, mark.column, "", message))
        return []
    for dup in data.duplicates:
        message = f"duplicate key (first at line {dup.first.line}); YAML keeps only the last one"
        errors.append(ConfigError(file, dup.second.line, dup.second.column, str(dup.key), message))
    for key, mark in data.key_marks.items():
        if key in (section, "hooks"):
            continue
        if key in SECTIONS:
            message = f"belongs in {key}.yaml, not {file.name}"
        else:
            hint = suggest(key, (section,)) if isinstance(key, str) else None
            message = f"unknown key {key!r}; {file.name} holds only '{section}:'"
            if hint is not None:
                message = f"unknown key {key!r} (did you mean {hint!r}?)"
        errors.append(ConfigError(file, mark.line, mark.column, str(key), message))
    if section not in data:
        message = f"no '{section}:' key at the top (an empty file means no {section})"
        errors.append(ConfigError(file, data.mark.line, data.mark.column, "", message))
    value = data.get(section)
    if value is None:
        return []
    if not isinstance(value, MarkedList):
        mark = data.mark_of(section)
        message = f"expected a list of entries (- name: …), got {show(value)}"
        errors.append(ConfigError(file, mark.line, mark.column, section, message))
        return []
    return list(zip(value, value.item_marks, strict=True))


def _file_hooks(
    data: Any, file: Path, root: Path, environ: Mapping[str, str], errors: list[ConfigError]
) -> Hooks | None:
    """The top-level ``hooks:`` of a file (for all its entries); its problems are the file's."""
    if not isinstance(data, MarkedMap) or "hooks" not in data:
        return None
    r = Reader(environ)
    hooks = read_hooks(r, data, "", root)
    for p in r.problems:
        errors.append(ConfigError(file, p.mark.line, p.mark.column, p.field, p.message))
    return None if r.problems else hooks


def _check_across(entries: list[Entry]) -> None:
    """Names, provided services and dependencies; a duplicate entry loses its ``name``."""
    first: dict[str, Entry] = {}
    for entry in entries:
        if entry.name is None:
            continue
        if entry.name in first:
            where = _where(first[entry.name], first[entry.name].name_mark)
            message = f"{entry.name!r} is already used by {first[entry.name].prefix} ({where})"
            entry.problems.append(Problem(entry.name_mark, f"{entry.prefix}.name", message))
            entry.name = None  # its errors cannot be pinned on that name: they are fatal
        else:
            first[entry.name] = entry
    providers: dict[str, Entry] = {}
    for entry in entries:
        for service, mark, field in entry.provides:
            owner = providers.setdefault(service, entry)
            if owner is not entry:
                message = f"service {service!r} is already provided by {owner.name or owner.prefix}"
                entry.problems.append(Problem(mark, field, message))
    for entry in entries:
        for dep, mark, field in entry.depends:
            if dep not in first:
                close = difflib.get_close_matches(dep, list(first), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                entry.problems.append(Problem(mark, field, f"no extension is named {dep!r}{hint}"))
    graph = {name: [dep for dep, _, _ in e.depends if dep in first] for name, e in first.items()}
    for cycle in _cycles(graph):
        text = " -> ".join(cycle)
        for member, target in itertools.pairwise(cycle):
            mark, field = next((m, f) for dep, m, f in first[member].depends if dep == target)
            first[member].problems.append(Problem(mark, field, f"dependency cycle: {text}"))
    changed = True
    while changed:  # an entry that depends on an invalid one is invalid too
        changed = False
        for entry in entries:
            if entry.problems:
                continue
            for dep, mark, field in entry.depends:
                if first[dep].problems:
                    message = f"depends on {dep!r}, which has configuration errors"
                    entry.problems.append(Problem(mark, field, message))
                    changed = True
                    break


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Cycles found by an iterative depth-first search, each as ``[a, b, …, a]``."""
    state = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    cycles: list[list[str]] = []
    for start in graph:
        if state[start]:
            continue
        path, stack = [start], [iter(graph[start])]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[nxt] == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph[nxt]))
    return cycles


def _where(entry: Entry, mark: Mark) -> str:
    return f"{ConfigError(entry.file, 0, 0, '', '').display_file}:{mark.line}:{mark.column}"


def _result(root: Path, entries: list[Entry], file_errors: list[ConfigError]) -> LoadResult:
    errors = list(file_errors)
    invalid: dict[str, tuple[ConfigError, ...]] = {}
    extensions: list[Extension] = []
    for entry in entries:
        found = tuple(
            ConfigError(entry.file, p.mark.line, p.mark.column, p.field, p.message, entry.name)
            for p in entry.problems
        )
        if found:
            errors.extend(found)
            if entry.name is not None:
                invalid[entry.name] = found
        elif entry.extension is not None:
            extensions.append(entry.extension)
    errors.sort(key=lambda e: (not e.file.name.startswith("servers"), e.line, e.column))
    return LoadResult(Registry(root, tuple(extensions)), tuple(errors), FrozenDict(invalid))
