"""``hooks:`` — in an entry, or at the top of servers.yaml/modules.yaml for all its entries.

::

    hooks:
      onFailed: [/usr/local/bin/notify, --to, ops]
      onCrash: [./hooks/page.sh]      # relative: to the extensions directory
      timeout: 5s                     # default 10s; then the hook is killed

Each event is an argv list (never a shell). An entry's own events replace its file's, event
by event; an entry's ``timeout`` replaces the file's.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.config import schema
from supervisor.config.blocks import positive
from supervisor.config.fields import Reader, join
from supervisor.config.load import MarkedMap
from supervisor.config.values import FrozenDict, parse_duration

__all__ = ["HOOK_KEYS", "merge_hooks", "read_hooks"]

HOOK_KEYS = (*schema.HOOK_EVENTS, "timeout")


def read_hooks(r: Reader, item: MarkedMap, p: str, root: Path) -> schema.Hooks | None:
    """The ``hooks:`` block of ``item`` (None when absent); problems go to ``r``."""
    found, path = r.mapping(item, "hooks", p), join(p, "hooks")
    if found is None:
        return None
    r.keys(found, HOOK_KEYS, path)
    commands: dict[str, tuple[str, ...]] = {}
    for event in schema.HOOK_EVENTS:
        argv = r.strings(found, event, path)
        if argv is None:
            continue
        field = join(path, event)
        if not argv or not argv[0][0]:
            r.fail(found.mark_of(event), field, "expected a non-empty list: [command, arg, …]")
            continue
        if any("\0" in arg for arg, _, _ in argv):
            r.fail(found.mark_of(event), field, "must not contain NUL characters")
            continue
        program = argv[0][0]
        if "/" in program and not program.startswith("/"):
            program = str(root / program)  # ./hooks/x: in the extensions directory
        commands[event] = (program, *(arg for arg, _, _ in argv[1:]))
    timeout = r.typed(found, "timeout", path, positive(parse_duration), None)
    return schema.Hooks(commands=FrozenDict(commands), timeout=timeout)


def merge_hooks(file: schema.Hooks | None, entry: schema.Hooks | None) -> schema.Hooks:
    """An entry's hooks over its file's, event by event (and its timeout over the file's)."""
    if file is None:
        return entry or schema.Hooks()
    if entry is None:
        return file
    commands = FrozenDict({**file.commands, **entry.commands})
    timeout = entry.timeout if entry.timeout is not None else file.timeout
    return schema.Hooks(commands=commands, timeout=timeout)
