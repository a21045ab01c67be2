"""Reading one registry YAML file into plain data that remembers where each value came from.

Theory of operation: the file is checked and read as bytes (refused above ``MAX_FILE_BYTES``
before parsing), decoded as strict UTF-8, and composed into a YAML node graph by the C parser
when available. Before anything is constructed, one iterative walk over that graph refuses
recursive aliases, nesting deeper than ``MAX_DEPTH`` and alias "bombs" (it counts the nodes the
document would have once every alias is expanded, memoised per node so the count itself is
cheap), and notes duplicate keys per mapping (PyYAML would silently keep the last). Only then
does a SafeLoader subclass construct ``MarkedMap``/``MarkedList`` values: ordinary dicts and
lists that also carry 1-based line/column marks for themselves, their keys and their values.

Nothing here raises for bad input: problems come back as ``FileProblem`` values.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "Duplicate",
    "FileProblem",
    "Mark",
    "MarkedList",
    "MarkedMap",
    "Parsed",
    "parse_bytes",
    "parse_text",
    "read_file",
]

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add on top of the ones written out

_MERGE_TAG = "tag:yaml.org,2002:merge"
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Mark:
    """A 1-based position in a file; line 0 means "the whole file"."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: Any) -> Mark:
        return cls(mark.line + 1, mark.column + 1)


@dataclass(frozen=True, slots=True)
class Duplicate:
    key: str
    first: Mark
    second: Mark


class MarkedMap(dict[Any, Any]):
    """A dict from YAML with the marks of itself, its keys and values, and duplicate keys."""

    __slots__ = ("duplicates", "key_marks", "mark", "value_marks")

    def __init__(self, mark: Mark) -> None:
        super().__init__()
        self.mark = mark
        self.key_marks: dict[Any, Mark] = {}
        self.value_marks: dict[Any, Mark] = {}
        self.duplicates: tuple[Duplicate, ...] = ()

    def mark_of(self, key: Any) -> Mark:
        """Where the value of ``key`` is (the mapping's own mark when the key is absent)."""
        return self.value_marks.get(key, self.mark)


class MarkedList(list[Any]):
    """A list from YAML with the marks of itself and each item."""

    __slots__ = ("item_marks", "mark")

    def __init__(self, mark: Mark) -> None:
        super().__init__()
        self.mark = mark
        self.item_marks: list[Mark] = []


@dataclass(frozen=True, slots=True)
class FileProblem:
    line: int
    column: int
    message: str


@dataclass(frozen=True, slots=True)
class Parsed:
    """The document (None when empty) or the problems that stopped it from being read."""

    data: Any = None
    problems: tuple[FileProblem, ...] = field(default=())


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    duplicates: dict[int, tuple[Duplicate, ...]]


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[MarkedMap]:
    data = MarkedMap(Mark.of(node.start_mark))
    yield data  # yielded empty first so that the constructor can handle shared references
    data.duplicates = loader.duplicates.get(id(node), ())
    loader.flatten_mapping(node)  # resolves `<<: *defaults` merge keys
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=False)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found a key that is a list or mapping",
                key_node.start_mark,
            )
        data[key] = loader.construct_object(value_node, deep=False)
        data.key_marks[key] = Mark.of(key_node.start_mark)
        data.value_marks[key] = Mark.of(value_node.start_mark)


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Iterator[MarkedList]:
    data = MarkedList(Mark.of(node.start_mark))
    yield data
    for item in node.value:
        data.append(loader.construct_object(item, deep=False))
        data.item_marks.append(Mark.of(item.start_mark))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
# Dates stay the text they were written as: config is plain data sent to a worker.
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _BaseLoader.construct_yaml_str)


def read_file(path: Path) -> Parsed:
    """Read and parse one YAML file (which must exist); never raises for bad content."""
    try:
        size = path.stat().st_size
        if size <= MAX_FILE_BYTES:
            with path.open("rb") as stream:
                raw = stream.read(MAX_FILE_BYTES + 1)  # the file may grow between stat and read
            size = len(raw)
    except IsADirectoryError:
        return _problem("is a directory, expected a YAML file")
    except OSError as exc:
        return _problem(f"cannot read the file: {exc.strerror or exc}")
    if size > MAX_FILE_BYTES:
        return _problem(
            f"file is {size / (1024 * 1024):.1f} MiB, over the {MAX_FILE_BYTES // (1024 * 1024)} "
            "MiB limit; refusing to parse it"
        )
    return parse_bytes(raw)


def parse_bytes(raw: bytes) -> Parsed:
    """Decode strict UTF-8 (a BOM is allowed) and parse."""
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = raw.count(b"\n", 0, offset) + 1
        column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
        return Parsed(
            problems=(
                FileProblem(
                    line,
                    column,
                    f"not valid UTF-8: byte 0x{raw[offset]:02x} at offset {offset} "
                    "(save the file as UTF-8)",
                ),
            )
        )
    return parse_text(text)


def parse_text(text: str) -> Parsed:
    """Parse YAML text into MarkedMap/MarkedList/scalars."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Parsed()
        duplicates, problem = _inspect(node)
        if problem is not None:
            return Parsed(problems=(problem,))
        loader.duplicates = duplicates
        return Parsed(data=loader.construct_document(node))
    except yaml.MarkedYAMLError as exc:
        return Parsed(problems=(_syntax_problem(exc, text),))
    except yaml.YAMLError as exc:
        return _problem(f"invalid YAML: {exc}")
    except RecursionError:
        return _problem(f"nesting is deeper than {MAX_DEPTH} levels")
    finally:
        loader.dispose()


def _problem(message: str) -> Parsed:
    return Parsed(problems=(FileProblem(0, 0, message),))


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str) -> FileProblem:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return FileProblem(0, 0, f"invalid YAML: {exc.problem or exc}")
    lines = text.splitlines()
    for candidate in (exc.problem_mark, exc.context_mark):
        if candidate is None or candidate.line >= len(lines):
            continue
        line = lines[candidate.line]
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        at_mark = line[candidate.column : candidate.column + 1]
        if "\t" in indent or at_mark == "\t":
            column = line.index("\t") + 1
            return FileProblem(
                candidate.line + 1,
                column,
                "tabs are not allowed for indentation (use spaces)",
            )
    problem = str(exc.problem)
    if problem.startswith("could not determine a constructor for the tag "):
        tag = problem.removeprefix("could not determine a constructor for the tag ")
        return FileProblem(
            mark.line + 1,
            mark.column + 1,
            f"unsupported YAML tag {tag}: only plain data is allowed",
        )
    if problem == "but found another document":
        return FileProblem(
            mark.line + 1, mark.column + 1, "only one YAML document is allowed (found a second ---)"
        )
    message = f"invalid YAML: {problem}"
    if exc.context and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return FileProblem(mark.line + 1, mark.column + 1, message)


def _inspect(root: yaml.Node) -> tuple[dict[int, tuple[Duplicate, ...]], FileProblem | None]:
    """Refuse recursive aliases, deep nesting and alias bombs; collect duplicate keys.

    Iterative post-order walk; each node is visited once however many aliases point at it, and
    its expanded size (itself plus its expanded children) is memoised.
    """
    expanded: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()
    duplicates: dict[int, tuple[Duplicate, ...]] = {}
    # (node, depth, its children once entered: the entry that finishes it) — None to enter it
    stack: list[tuple[yaml.Node, int, list[yaml.Node] | None]] = [(root, 0, None)]
    while stack:
        node, depth, children = stack.pop()
        key = id(node)
        if children is not None:
            open_nodes.discard(key)
            # Python ints do not overflow, and the height cap below bounds their size.
            expanded[key] = 1 + sum(expanded[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            if height[key] > MAX_DEPTH:  # counts nesting through aliases too
                return {}, _too_deep(node)
            continue
        if key in expanded:
            continue
        if isinstance(node, yaml.ScalarNode):
            expanded[key] = height[key] = 1
            continue
        if key in open_nodes:
            mark = Mark.of(node.start_mark)
            return {}, FileProblem(mark.line, mark.column, "recursive alias (refers to itself)")
        if depth > MAX_DEPTH:
            return {}, _too_deep(node)
        open_nodes.add(key)
        children = _children(node)
        stack.append((node, depth, children))
        if isinstance(node, yaml.MappingNode):
            found = _duplicate_keys(node)
            if found:
                duplicates[key] = found
        stack.extend((child, depth + 1, None) for child in reversed(children))
    if expanded[id(root)] - len(expanded) > MAX_ALIAS_NODES:
        return {}, FileProblem(
            0,
            0,
            f"aliases (*name) would expand the document by more than {MAX_ALIAS_NODES} "
            "values; refusing it (an alias bomb?)",
        )
    return duplicates, None


def _too_deep(node: yaml.Node) -> FileProblem:
    mark = Mark.of(node.start_mark)
    return FileProblem(mark.line, mark.column, f"nesting is deeper than {MAX_DEPTH} levels")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _duplicate_keys(node: yaml.MappingNode) -> tuple[Duplicate, ...]:
    seen: dict[tuple[str, str], yaml.Node] = {}
    found: list[Duplicate] = []
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        first = seen.setdefault((key_node.tag, key_node.value), key_node)
        if first is not key_node:
            found.append(
                Duplicate(key_node.value, Mark.of(first.start_mark), Mark.of(key_node.start_mark))
            )
    return tuple(found)
