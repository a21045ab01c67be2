"""Edit ``servers.yaml`` the way an operator would: add one entry at the end of ``servers:``,
or take one out, keeping every comment and the layout of the rest (ruamel.yaml round-trip).

Text in, text out: the caller validates the result and writes it atomically.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

__all__ = ["EditError", "add_entry", "entry_names", "remove_entry"]

_ITEM = re.compile(r"^( *)- ", re.MULTILINE)


class EditError(Exception):
    """servers.yaml cannot be edited; the message says why."""


def _yaml(offset: int) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the operator's long lines
    yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    return yaml


def _load(text: str) -> Any:
    try:
        return _yaml(2).load(text)
    except YAMLError as exc:
        raise EditError(f"servers.yaml is not valid YAML: {exc}") from None


def _servers(data: Any) -> CommentedSeq | None:
    if data is None:
        return None
    if not isinstance(data, CommentedMap):
        raise EditError("servers.yaml: expected a mapping with a 'servers:' list at the top")
    servers = data.get("servers")
    if servers is not None and not isinstance(servers, CommentedSeq):
        raise EditError("servers.yaml: 'servers:' is not a list")
    return servers


def entry_names(text: str) -> list[str]:
    """The ``name:`` of every entry (well-formed or not) of ``servers:``."""
    servers = _servers(_load(text))
    return [str(item.get("name")) for item in servers or () if isinstance(item, Mapping)]


def add_entry(text: str, entry: Mapping[str, Any], comment: str) -> str:
    """``text`` with ``entry`` appended to ``servers:`` (``comment`` on the line above it)."""
    data = _load(text)
    found = _ITEM.search(text)
    offset = len(found.group(1)) if found else 2
    if data is None:
        data = CommentedMap()
    servers = _servers(data)
    if servers is None:
        servers = CommentedSeq()
        data["servers"] = servers
    item = CommentedMap()
    for key, value in entry.items():
        item[key] = _node(value)
    servers.append(item)
    if len(servers) > 1:
        item.yaml_set_start_comment(comment, indent=offset)
    else:
        servers.yaml_set_start_comment(comment, indent=offset)
    out = io.StringIO()
    _yaml(offset).dump(data, out)
    return out.getvalue()


def _node(value: Any) -> Any:
    if isinstance(value, Mapping):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = _node(item)
        node.fa.set_flow_style()
        return node
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_node(v) for v in value)
        seq.fa.set_flow_style()
        return seq
    return value


def remove_entry(text: str, name: str) -> str:
    """``text`` without the entry named ``name`` (and the comment lines right above it); the
    comments of the other entries stay where they were."""
    data = _load(text)
    servers = _servers(data)
    names = [item.get("name") if isinstance(item, Mapping) else None for item in servers or ()]
    if servers is None or name not in names:
        raise EditError(f"servers.yaml has no entry named {name!r}")
    index = names.index(name)
    lines = text.splitlines(keepends=True)
    start = servers.lc.item(index)[0]  # 0-based line of its "- "
    end = servers.lc.item(index + 1)[0] if index + 1 < len(servers) else _block_end(lines, start)
    keep = end
    while keep > start + 1 and lines[keep - 1].strip().startswith("#"):
        keep -= 1  # the comment lines right above the next entry are the next entry's
    if index + 1 >= len(servers):
        while keep > start + 1 and _blank_or_comment(lines[keep - 1]):
            keep -= 1  # after the last entry: what follows the block stays
    column = len(lines[start]) - len(lines[start].lstrip(" "))
    while start > 0 and lines[start - 1].startswith(" " * column + "#"):
        start -= 1  # the entry's own comment, at its column (e.g. the one spctl add wrote)
    result = "".join(lines[:start] + lines[keep:])
    if len(servers) == 1:
        result = _empty_list(result)
    check = _servers(_load(result))
    left = [item.get("name") for item in check or () if isinstance(item, Mapping)]
    if left != [n for n in names if n != name]:
        raise EditError(f"cannot take {name!r} out of servers.yaml by its lines; edit it by hand")
    return result


def _block_end(lines: list[str], start: int) -> int:
    """The line after the last one of the ``servers:`` block that begins at ``start``."""
    indent = len(lines[start]) - len(lines[start].lstrip(" "))
    for number in range(start + 1, len(lines)):
        line = lines[number]
        if _blank_or_comment(line):
            continue
        if len(line) - len(line.lstrip(" ")) <= indent and not line.lstrip(" ").startswith("- "):
            return number
        if len(line) - len(line.lstrip(" ")) < indent:
            return number
    return len(lines)


def _blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _empty_list(text: str) -> str:
    """``servers:`` left with no item: make it an explicit empty list."""
    return re.sub(
        r"^servers:[ \t]*(#[^\n]*)?$",
        lambda m: "servers: []" + (f"  {m.group(1)}" if m.group(1) else ""),
        text,
        count=1,
        flags=re.MULTILINE,
    )
