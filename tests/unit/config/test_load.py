"""Whole-file problems: the directory, the file, its bytes, its YAML and its top level.

Each one is a fatal error with the file, the line (when there is one) and a clear message;
none of them raises.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from supervisor.config import MAX_FILE_BYTES, load_registry
from tests.unit.config.helpers import Tree, lines

_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{b}: &{b} [{','.join(['*' + a] * 9)}]"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    + ["servers: *i", ""]
)

# (id, servers.yaml content, expected start of the one error line, expected text in it)
BAD_FILES: list[tuple[str, str | bytes, str, str]] = [
    (
        "syntax error",
        "servers:\n  - name: a\n    type: [local\n",
        "extensions/servers.yaml:4:1:",
        "invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at line 3)",
    ),
    (
        "tab indentation",
        "servers:\n  - name: a\n\t  type: local\n",
        "extensions/servers.yaml:3:1:",
        "tabs are not allowed for indentation",
    ),
    (
        "tab indenting a key",
        "servers:\n\t- name: a\n",
        "extensions/servers.yaml:2:1:",
        "tabs are not allowed for indentation",
    ),
    (
        "tab after a dash",
        "servers:\n  -\tname: a\n",
        "extensions/servers.yaml:2:4:",
        "tabs are not allowed for indentation",
    ),
    (
        "top-level list",
        "- name: a\n",
        "extensions/servers.yaml:1:1:",
        "expected a mapping with a 'servers:' list at the top, got a list",
    ),
    (
        "top-level scalar",
        "hello\n",
        "extensions/servers.yaml:1:1:",
        "expected a mapping with a 'servers:' list at the top, got 'hello'",
    ),
    (
        "servers is not a list",
        "servers: {name: a}\n",
        "extensions/servers.yaml:1:10: servers:",
        "expected a list of entries (- name: …), got a mapping",
    ),
    (
        "section in the wrong file",
        "servers: []\nmodules: []\n",
        "extensions/servers.yaml:2:1: modules:",
        "belongs in modules.yaml, not servers.yaml",
    ),
    (
        "near-miss top-level key",
        "servers: []\nserver: []\n",
        "extensions/servers.yaml:2:1: server:",
        "unknown key 'server' (did you mean 'servers'?)",
    ),
    (
        "duplicate top-level key",
        "servers: []\nservers: []\n",
        "extensions/servers.yaml:2:1: servers:",
        "duplicate key (first at line 1)",
    ),
    (
        "not UTF-8",
        b"servers:\n  - name: caf\xe9\n",
        "extensions/servers.yaml:2:14:",
        "not valid UTF-8: byte 0xe9 at offset 22",
    ),
    (
        "alias bomb",
        _BOMB,
        "extensions/servers.yaml:",
        "would expand the document by more than 100000 values",
    ),
    (
        "recursive alias",
        "servers: &a [*a]\n",
        "extensions/servers.yaml:1:10:",
        "recursive alias",
    ),
    (
        "deep nesting",
        "servers: " + "[" * 100 + "]" * 100 + "\n",
        "extensions/servers.yaml:",
        "nesting is deeper than 64 levels",
    ),
    (
        "two documents",
        "servers: []\n---\nservers: []\n",
        "extensions/servers.yaml:2:1:",
        "only one YAML document is allowed (found a second ---)",
    ),
    (
        "python tag",
        "servers: !!python/object/apply:os.system ['true']\n",
        "extensions/servers.yaml:1:10:",
        "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    (
        "unhashable key",
        "servers:\n  ? [a, b]\n  : 1\n",
        "extensions/servers.yaml:",
        "found a key that is a list or mapping",
    ),
]


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_file(tree: Tree, content: str | bytes, where: str, message: str) -> None:
    tree.servers(content if isinstance(content, bytes) else content.encode())
    result = tree.load()
    assert not result.ok
    assert result.fatal
    assert result.registry.extensions == ()
    matching = [line for line in lines(result) if message in line]
    assert matching, lines(result)
    assert matching[0].startswith(where), matching[0]


def test_missing_keys_error_lists_the_section(tree: Tree) -> None:
    tree.servers("other: 1\n")
    assert lines(tree.load()) == [
        "extensions/servers.yaml:1:1: other: unknown key 'other'; servers.yaml holds only "
        "'servers:'",
        "extensions/servers.yaml:1:1: no 'servers:' key at the top (an empty file means no "
        "servers)",
    ]


@pytest.mark.parametrize("content", ["", "\n\n", "# only comments\n", "---\n", "~\n", "servers:\n"])
def test_empty_file_means_no_entries(tree: Tree, content: str) -> None:
    tree.servers(content)
    tree.modules(content.replace("servers", "modules"))
    result = tree.load()
    assert result.ok, lines(result)
    assert result.registry.extensions == ()


def test_absent_files_contribute_nothing(tree: Tree) -> None:
    result = tree.load()
    assert result.ok
    assert result.registry.extensions == ()


def test_tabs_inside_a_block_scalar_are_content(tree: Tree) -> None:
    tree.servers(
        "servers:\n  - name: a\n    type: local\n    path: servers/weather\n"
        "    config:\n      script: |\n        if x:\n        \treturn 1\n"
    )
    result = tree.load()
    assert result.ok, lines(result)
    assert result.registry.extensions[0].config == {"script": "if x:\n\treturn 1\n"}


def test_bom_is_accepted(tree: Tree) -> None:
    tree.servers(b"\xef\xbb\xbfservers: []\n")
    assert tree.load().ok


def test_missing_directory_is_one_fatal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = load_registry(Path("extensions"), environ={})
    assert lines(result) == ["extensions: extensions directory not found"]
    assert result.fatal
    assert result.errors[0].line == 0


def test_directory_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "extensions").write_text("", encoding="utf-8")
    assert lines(load_registry("extensions", environ={})) == ["extensions: is not a directory"]


def test_yaml_file_that_is_a_directory(tree: Tree) -> None:
    (tree.root / "servers.yaml").mkdir()
    assert lines(tree.load()) == ["extensions/servers.yaml: is a directory, expected a YAML file"]


def test_dangling_symlink_is_reported(tree: Tree) -> None:
    (tree.root / "modules.yaml").symlink_to(tree.base / "nowhere.yaml")
    [line] = lines(tree.load())
    assert line.startswith("extensions/modules.yaml: cannot read the file: No such file")


def test_yml_spelling_is_pointed_out(tree: Tree) -> None:
    tree.write("servers.yml", "servers: []\n")
    assert lines(tree.load()) == ["extensions/servers.yml: is not read: rename it to servers.yaml"]


def test_oversized_file_is_refused_before_parsing(tree: Tree) -> None:
    # 10 MB of valid YAML: parsing it would take seconds; refusing it takes a stat.
    entry = "  - {name: a, type: local, path: ./servers/weather}\n"
    tree.servers("servers:\n" + entry * (10 * 1024 * 1024 // len(entry) + 1))
    started = time.monotonic()
    result = tree.load()
    assert time.monotonic() - started < 1.0
    assert lines(result) == [
        "extensions/servers.yaml: file is 10.0 MiB, over the 1 MiB limit; refusing to parse it"
    ]


def test_file_at_the_cap_is_parsed(tree: Tree) -> None:
    header = "servers: []\n"
    tree.servers(header + "#" * (MAX_FILE_BYTES - len(header) - 1) + "\n")
    assert tree.load().ok


def test_alias_bomb_is_refused_quickly_and_small(tree: Tree) -> None:
    tree.servers(_BOMB)
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = tree.load()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2.0
    assert peak < 10 * 1024 * 1024
    assert result.fatal


def test_small_aliases_and_merge_keys_are_fine(tree: Tree) -> None:
    tree.servers(
        """
        servers:
          - &weather
            name: weather
            type: local
            path: ./servers/weather
            limits: &limits {memory: 256MiB, cpu: 50%}
          - <<: *weather
            name: weather-two
            limits: *limits
        """
    )
    result = tree.load()
    assert result.ok, lines(result)
    one, two = result.registry.extensions
    assert two.name == "weather-two"
    assert two.path == one.path
    assert two.limits == one.limits
    assert one.limits.memory == 256 * 1024**2


def test_all_file_errors_are_reported_together(tree: Tree) -> None:
    tree.servers("servers: [\n")
    tree.modules(b"modules:\n  - \xff\n")
    result = tree.load()
    assert [error.file.name for error in result.errors] == ["servers.yaml", "modules.yaml"]
