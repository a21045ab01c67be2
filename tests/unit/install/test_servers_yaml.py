"""servers.yaml edits of ``spctl add``/``remove``: comments and layout kept."""

from __future__ import annotations

import pytest

from supervisor.install.servers_yaml import EditError, add_entry, entry_names, remove_entry
from supervisor.install.sources import derive_name

TEXT = """\
# my registry
servers:
  # the notes server
  - name: notes   # keep me
    type: local
    path: ./servers/notes

  # the echo server
  - name: echo
    type: local
    path: ./servers/echo
# trailing comment
"""
ENTRY = {"name": "time", "type": "local", "install": "pypi:t==1", "command": ["t", "--x"]}


def test_add_then_remove_gives_back_the_same_text() -> None:
    added = add_entry(TEXT, ENTRY, "added by spctl add: pypi:t")
    assert added.startswith(TEXT.split("# trailing")[0])
    assert "  # added by spctl add: pypi:t\n  - name: time\n" in added
    assert "    command: [t, --x]\n" in added
    assert entry_names(added) == ["notes", "echo", "time"]
    assert remove_entry(added, "time") == TEXT


def test_remove_keeps_the_comments_of_the_others() -> None:
    out = remove_entry(TEXT, "notes")
    assert out == TEXT.replace(
        "  # the notes server\n  - name: notes   # keep me\n    type: local\n"
        "    path: ./servers/notes\n\n",
        "",
    )
    last = remove_entry(out, "echo")
    assert last.startswith("# my registry\nservers: []") and "# trailing comment" in last


def test_empty_or_missing_files_and_unknown_names() -> None:
    assert add_entry("", ENTRY, "c").startswith("servers:\n  # c\n  - name: time\n")
    with pytest.raises(EditError, match="no entry named 'nope'"):
        remove_entry(TEXT, "nope")
    with pytest.raises(EditError, match="not valid YAML"):
        add_entry("servers: [", ENTRY, "c")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("mcp-server-time", "time"),
        ("io.github.user/weather-mcp", "weather"),
        ("Fancy_Server.X", "fancy-server-x"),
        ("mcp-", "mcp"),
        ("@scope/server-everything", "everything"),
    ],
)
def test_derived_names(text: str, name: str) -> None:
    assert derive_name(text) == name


def test_long_lines_and_quotes_are_left_as_they_were() -> None:
    text = (
        "servers:\n  - name: a\n    type: local\n    path: ./servers/a\n"
        f"    config: {{note: '{'x' * 150}', other: \"q\"}}\n"
    )
    added = add_entry(text, ENTRY, "c")
    assert added.startswith(text)
    assert remove_entry(added, "time") == text
