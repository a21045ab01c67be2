"""load_registry never raises: random text and random entry shapes only ever yield errors."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config import LoadResult, load_registry
from supervisor.config.entries import ENTRY_KEYS

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["local", "remote", "daemon", "plugin", "30s", "1G", "50%", "${X}", "${X:-1}",
                     "https://a.example", "servers/pkg", "../x", "/etc", "bearer", "oauth2"]),
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from([*ENTRY_KEYS, "type", "token", "memory", "x"]), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
_ENTRIES = st.lists(st.dictionaries(st.sampled_from(ENTRY_KEYS), _VALUES, max_size=8), max_size=3)


def _load(servers: str | bytes, modules: str | bytes = b"") -> LoadResult:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "pkg").mkdir()
        (root / "pkg" / "__init__.py").write_bytes(b"")
        for name, content in (("servers.yaml", servers), ("modules.yaml", modules)):
            data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
            (root / name).write_bytes(data)
        result = load_registry(root, environ={"X": "2"})
    for error in result.errors:
        assert error.message
        str(error)
        error.to_dict()
    assert result.ok == (not result.errors)
    return result


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    _load(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100))
def test_random_bytes(data: bytes) -> None:
    _load(b"servers:\n" + data)


@settings(max_examples=150, deadline=None)
@given(_ENTRIES, _ENTRIES)
def test_random_entries(servers: list[dict[str, Any]], modules: list[dict[str, Any]]) -> None:
    result = _load(yaml.safe_dump({"servers": servers}), yaml.safe_dump({"modules": modules}))
    assert len(result.registry.extensions) <= len(servers) + len(modules)
    for extension in result.registry.extensions:
        hash(extension)
