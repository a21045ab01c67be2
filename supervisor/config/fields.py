"""Typed reads out of marked YAML mappings that record problems instead of raising.

A ``Reader`` belongs to one registry entry. Each read takes the mapping, the key and the
field path of the mapping, and returns the value or, after recording a ``Problem`` at the
value's line and column, a harmless default so that every other field is still checked.
Rules shared by every field:

- ``${VAR}`` is expanded in every string value (never in keys); a string that came from a
  variable is read as YAML would read it (``${LAZY:-false}`` is a boolean).
- an empty value (YAML null) means "not given".
- a value marked ``secret`` is never quoted in a message.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from supervisor.config.load import Mark, MarkedList, MarkedMap
from supervisor.config.values import ExpansionError, FrozenDict, Secret, expand, freeze, show

__all__ = ["Problem", "Reader", "join", "kind_of", "suggest"]

_T = TypeVar("_T")
_BOOLEANS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Problem:
    mark: Mark
    field: str
    message: str


def join(path: str, key: object) -> str:
    """``servers[0]`` + ``auth`` → ``servers[0].auth``; odd keys are quoted."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def kind_of(value: object) -> str:
    """The type of a value in words, for messages that must not quote it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return show(value)  # null, list, mapping: these do not reveal a value


def suggest(key: str, allowed: Collection[str]) -> str | None:
    """The allowed key ``key`` was probably meant to be (case, ``_``/``-`` or a typo)."""
    squash = key.replace("_", "").replace("-", "").lower()
    for candidate in allowed:
        if candidate.lower() == squash:
            return candidate
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return close[0] if close else None


class Reader:
    """Reads one entry's fields; ``problems`` collects everything wrong with it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[Problem] = []

    def fail(self, mark: Mark, field: str, message: str) -> None:
        self.problems.append(Problem(mark, field, message))

    def keys(self, m: MarkedMap, allowed: Collection[str], path: str) -> None:
        """Report duplicate keys and keys that are not in ``allowed``."""
        self.duplicates(m, path)
        for key in m:
            if isinstance(key, str) and key in allowed:
                continue
            hint = suggest(key, allowed) if isinstance(key, str) else None
            if hint is not None:
                message = f"unknown key {key!r} (did you mean {hint!r}?)"
            else:
                message = f"unknown key {key!r}; expected one of: {', '.join(allowed)}"
            self.fail(m.key_marks[key], join(path, key), message)

    def duplicates(self, m: MarkedMap, path: str) -> None:
        for dup in m.duplicates:
            self.fail(
                dup.second,
                join(path, dup.key),
                f"duplicate key {dup.key!r} (first at line {dup.first.line}, column "
                f"{dup.first.column}); YAML would silently keep only the last one",
            )

    def expand(self, text: str, mark: Mark, field: str) -> tuple[str, bool] | None:
        try:
            return expand(text, self.environ)
        except ExpansionError as exc:
            self.fail(mark, field, str(exc))
            return None

    def text(
        self, m: MarkedMap, key: str, path: str, *, required: bool = False, secret: bool = False
    ) -> tuple[str, bool] | None:
        """A string value, expanded: ``(text, came_from_a_variable)``, or None."""
        value, field, mark = m.get(key), join(path, key), m.mark_of(key)
        if value is None:
            if required:
                self.fail(mark, field, "is required")
            return None
        if not isinstance(value, str):
            got = kind_of(value) if secret else show(value)
            self.fail(mark, field, f"expected a string, got {got}")
            return None
        return self.expand(value, mark, field)

    def string(self, m: MarkedMap, key: str, path: str, *, required: bool = False) -> str | None:
        found = self.text(m, key, path, required=required)
        return None if found is None else found[0]

    def secret(self, m: MarkedMap, key: str, path: str, *, required: bool = False) -> Secret | None:
        found = self.text(m, key, path, required=required, secret=True)
        if found is None:
            return None
        if not found[0]:
            self.fail(m.mark_of(key), join(path, key), "is empty (is its variable set?)")
        return Secret(found[0])

    def typed(
        self, m: MarkedMap, key: str, path: str, convert: Callable[[Any], _T], default: _T
    ) -> _T:
        """A non-string value converted by ``convert``, which raises ValueError to refuse."""
        value, mark, field = m.get(key), m.mark_of(key), join(path, key)
        if value is None:
            return default
        if isinstance(value, str):
            found = self.expand(value, mark, field)
            if found is None:
                return default
            value = _as_yaml_scalar(found[0]) if found[1] else found[0]
        try:
            return convert(value)
        except ValueError as exc:
            self.fail(mark, field, str(exc))
            return default

    def choice(
        self,
        m: MarkedMap,
        key: str,
        path: str,
        choices: Collection[str],
        *,
        required: bool = False,
        default: str | None = None,
    ) -> str | None:
        found = self.text(m, key, path, required=required)
        if found is None:
            return default
        if found[0] not in choices:
            expected = " or ".join(repr(c) for c in choices)
            if len(choices) > 2:
                expected = "one of " + ", ".join(choices)
            self.fail(m.mark_of(key), join(path, key), f"expected {expected}, got {show(found[0])}")
            return default
        return found[0]

    def mapping(self, m: MarkedMap, key: str, path: str) -> MarkedMap | None:
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, MarkedMap):
            self.fail(m.mark_of(key), join(path, key), f"expected a mapping, got {show(value)}")
            return None
        return value

    def strings(self, m: MarkedMap, key: str, path: str) -> list[tuple[str, Mark, str]] | None:
        """A list of strings, each expanded, with its mark and field path; None when absent."""
        value, field = m.get(key), join(path, key)
        if value is None:
            return None
        if not isinstance(value, MarkedList):
            self.fail(m.mark_of(key), field, f"expected a list of strings, got {show(value)}")
            return None
        items: list[tuple[str, Mark, str]] = []
        for index, (item, mark) in enumerate(zip(value, value.item_marks, strict=True)):
            item_field = f"{field}[{index}]"
            if not isinstance(item, str):
                self.fail(mark, item_field, f"expected a string, got {show(item)}")
                continue
            found = self.expand(item, mark, item_field)
            if found is not None:
                items.append((found[0], mark, item_field))
        return items

    def string_map(
        self, m: MarkedMap, key: str, path: str, *, key_pattern: re.Pattern[str], what: str
    ) -> FrozenDict[str, str | Secret]:
        """A mapping of names to strings (numbers are turned into strings).

        Values are never quoted in messages; a value that came from ``${VAR}`` is a Secret.
        """
        found = self.mapping(m, key, path)
        if found is None:
            return FrozenDict()
        self.duplicates(found, join(path, key))
        items: dict[str, str | Secret] = {}
        for name, value in found.items():
            field, mark = join(join(path, key), name), found.mark_of(name)
            if not isinstance(name, str) or not key_pattern.fullmatch(name):
                self.fail(found.key_marks[name], field, f"{show(name)} is not a valid {what}")
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                self.fail(mark, field, f"expected a string, got {kind_of(value)}")
                continue
            expanded = self.expand(value, mark, field)
            if expanded is None:
                continue
            if any(char in expanded[0] for char in "\r\n\0"):
                self.fail(mark, field, "must not contain line breaks or NUL characters")
                continue
            items[name] = Secret(expanded[0]) if expanded[1] else expanded[0]
        return FrozenDict(items)

    def plain(self, value: Any, mark: Mark, path: str) -> Any:
        """Any YAML data, expanded and frozen (used for ``config``)."""
        if isinstance(value, MarkedMap):
            self.duplicates(value, path)
            return FrozenDict(
                (key, self.plain(item, value.mark_of(key), join(path, key)))
                for key, item in value.items()
            )
        if isinstance(value, MarkedList):
            return tuple(
                self.plain(item, item_mark, f"{path}[{index}]")
                for index, (item, item_mark) in enumerate(zip(value, value.item_marks, strict=True))
            )
        if isinstance(value, str):
            found = self.expand(value, mark, path)
            return None if found is None else found[0]
        try:
            return freeze(value)
        except TypeError as exc:
            self.fail(mark, path, f"{exc} (use plain mappings, lists and scalars)")
            return None


def _as_yaml_scalar(text: str) -> Any:
    """Read text from ``${VAR}`` as the boolean or number YAML would see; else keep the text."""
    stripped = text.strip()
    if stripped.lower() in _BOOLEANS:
        return _BOOLEANS[stripped.lower()]
    if _INT.fullmatch(stripped):
        return int(stripped)
    if _FLOAT.fullmatch(stripped):
        return float(stripped)
    return text
