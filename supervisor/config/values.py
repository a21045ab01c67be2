"""Scalar value parsing for the extension registry: durations, sizes, CPU shares, ``${VAR}``.

Every parser takes the raw YAML value (``str``, ``int``, ``float``…) and either returns the
parsed value or raises ``ValueError`` whose message says what was expected and what was found
(``expected a size like 512MiB or 1G, got 'lots'``); the caller prefixes the field path.

Also here: ``Secret`` (a string that never shows itself) and ``FrozenDict`` (the read-only,
hashable mapping used for ``config``, ``env`` and ``headers`` so that two loads of the same
text compare equal and extensions stay hashable).
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any, NoReturn, TypeVar

__all__ = [
    "ExpansionError",
    "FrozenDict",
    "Secret",
    "expand",
    "freeze",
    "parse_cpu",
    "parse_duration",
    "parse_size",
    "show",
    "thaw",
]

_K = TypeVar("_K")
_V = TypeVar("_V")


class Secret:
    """A string that is redacted in ``repr``/``str``/formatting; ``reveal()`` gives the value."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    def __str__(self) -> str:
        return "<redacted>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant-time, so equality checks in reload diffs leak nothing through timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


class FrozenDict(Mapping[_K, _V]):
    """An immutable, hashable mapping; equal to any mapping with the same items."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[_K, _V] | Iterable[tuple[_K, _V]] = ()) -> None:
        self._data: dict[_K, _V] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self._data == dict(other.items())

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"


def freeze(value: Any) -> Any:
    """Deep-convert plain YAML data to immutable, hashable data (dict→FrozenDict, list→tuple).

    Raises TypeError for anything that is not plain data (e.g. a YAML ``!!set``).
    """
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if value is None or isinstance(value, str | bool | int | float | bytes | Secret):
        return value
    raise TypeError(f"unsupported value of type {type(value).__name__}")


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``: plain ``dict``/``list`` data, e.g. to hand to an extension."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


def show(value: object) -> str:
    """How a (non-secret) value is quoted in an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a value of type {type(value).__name__}"


# -- durations ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(rf"({_NUMBER.pattern})\s*(ms|s|m|h|d)\s*")
_DURATION_HINT = "a duration like 30s, 250ms, 5m, 1h or 1m30s"


def parse_duration(value: object) -> float:
    """``250ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``1m30s`` or bare seconds → float seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _non_negative(_to_float(value), value, _DURATION_HINT)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return _non_negative(float(text), value, _DURATION_HINT)
        total, pos = 0.0, 0
        while text and pos < len(text):
            match = _DURATION_PART.match(text, pos)
            if match is None:
                break
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        else:
            if text and math.isfinite(total):
                return total
    raise ValueError(f"expected {_DURATION_HINT}, got {show(value)}")


# -- sizes -------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "B": 1}
for _i, _letter in enumerate("KMGT", start=1):
    _SIZE_UNITS[_letter] = _SIZE_UNITS[f"{_letter}iB"] = 1024**_i  # systemd: K = 1024
    _SIZE_UNITS[f"{_letter}B"] = 1000**_i  # SI, as disks and network cards count
_SIZE = re.compile(rf"({_NUMBER.pattern})\s*([KMGT]iB|[KMGT]B|[KMGT]|B)?")
_SIZE_HINT = "a size like 512MiB or 1G"


def parse_size(value: object) -> int:
    """``512MiB``/``512M`` (1024-based), ``800KB`` (1000-based), ``42B`` or a bare int → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"expected {_SIZE_HINT} (not negative), got {show(value)}")
        return value
    if isinstance(value, float) and value.is_integer():
        return int(_non_negative(value, value, _SIZE_HINT))
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is not None:
            number, unit = Fraction(match.group(1)), match.group(2) or ""
            if unit or number.denominator == 1:
                return int(number * _SIZE_UNITS[unit])
    raise ValueError(f"expected {_SIZE_HINT}, got {show(value)}")


# -- CPU shares --------------------------------------------------------------------------------

_CPU_HINT = "a CPU share like 50% or 1.5 (cores)"


def parse_cpu(value: object) -> float:
    """``50%`` → 0.5 cores; ``1.5`` or ``2`` → cores. Must be greater than zero."""
    cores: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        cores = _to_float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("%") and _NUMBER.fullmatch(text[:-1].rstrip()):
            cores = float(text[:-1]) / 100
        elif _NUMBER.fullmatch(text):
            cores = float(text)
    if cores is None or not math.isfinite(cores):
        raise ValueError(f"expected {_CPU_HINT}, got {show(value)}")
    if cores <= 0:
        raise ValueError(f"expected {_CPU_HINT} greater than zero, got {show(value)}")
    return cores


def _to_float(number: float) -> float:
    try:
        return float(number)
    except OverflowError:  # an int too big for a float
        return math.inf


def _non_negative(number: float, raw: object, hint: str) -> float:
    if not math.isfinite(number):
        raise ValueError(f"expected {hint}, got {show(raw)}")
    if number < 0:
        raise ValueError(f"expected {hint} (not negative), got {show(raw)}")
    return number


# -- ${VAR} expansion --------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExpansionError(ValueError):
    """A ``${...}`` reference that cannot be expanded; ``variable`` names it when known."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


def expand(text: str, environ: Mapping[str, str]) -> tuple[str, bool]:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``$${`` is a literal ``${``.

    Returns the expanded text and whether any reference was expanded. ``:-`` follows the shell:
    the default is used when the variable is unset or empty, and is expanded only then (it may
    itself contain references). Raises ExpansionError for an unset variable without a default
    or a malformed reference; the message names the variable, never a value.
    """
    if "$" not in text:
        return text, False
    out, _, used, missing = _scan(text, 0, environ, nested=False)
    if missing:
        name = missing[0]
        raise ExpansionError(
            f"environment variable {name} is not set (write ${{{name}:-default}} for a default)",
            name,
        )
    return out, used


def _scan(
    text: str, pos: int, environ: Mapping[str, str], *, nested: bool
) -> tuple[str, int, bool, list[str]]:
    """Scan from ``pos``; when ``nested``, stop after the ``}`` closing a default."""
    parts: list[str] = []
    used = False
    missing: list[str] = []
    while pos < len(text):
        char = text[pos]
        if text.startswith("$${", pos):
            parts.append("${")
            pos += 3
        elif text.startswith("${", pos):
            name_match = _NAME.match(text, pos + 2)
            if name_match is None:
                raise ExpansionError(
                    "malformed variable reference: expected ${NAME} or ${NAME:-default} "
                    "(write $${ for a literal ${)"
                )
            name, pos = name_match.group(), name_match.end()
            value = environ.get(name)
            used = True
            if text.startswith("}", pos):
                pos += 1
                if value is None:
                    missing.append(name)
                else:
                    parts.append(value)
            elif text.startswith(":-", pos):
                default, pos, _, default_missing = _scan(text, pos + 2, environ, nested=True)
                if value:
                    parts.append(value)
                else:
                    parts.append(default)
                    missing.extend(default_missing)
            else:
                raise ExpansionError(
                    f"malformed variable reference ${{{name}...: expected '}}' or ':-default}}' "
                    "after the name"
                )
        elif nested and char == "}":
            return "".join(parts), pos + 1, used, missing
        else:
            parts.append(char)
            pos += 1
    if nested:
        raise ExpansionError("unclosed variable reference: '${' without a matching '}'")
    return "".join(parts), pos, used, missing
