"""The docs keep up with the code: every CLI verb and every registry key is documented.

The verbs are taken from the typer app itself (``supervisor.cli.app``) and the keys from where
the config package declares them (its ``*_KEYS`` collections, and whatever ``Reader.keys`` is
asked to allow while a registry that uses every block is loaded), so a verb or a key added to
the code without a line in ``docs/`` fails here. ``make docs`` (mkdocs --strict) checks links.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Collection, Iterator
from pathlib import Path

import click
import pytest
import typer

import supervisor.config
from supervisor.cli.app import app
from supervisor.config import load_registry, schema
from supervisor.config.fields import Reader
from supervisor.config.load import MarkedMap

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _sections(text: str) -> dict[str, str]:
    """Heading text (backticks kept) → the text under it, down to the next heading of its level
    or above. Headings inside fenced code blocks are not headings."""
    found: list[tuple[int, str, int]] = []
    fence = False
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fence = not fence
        match = re.match(r"(#+) +(.*?) *$", line)
        if match and not fence:
            found.append((len(match.group(1)), match.group(2), number))
    sections = {}
    for index, (level, title, start) in enumerate(found):
        end = next((n for lvl, _, n in found[index + 1 :] if lvl <= level), len(lines))
        sections[title] = "\n".join(lines[start + 1 : end])
    return sections


# -- CLI verbs ---------------------------------------------------------------------------


def _verbs(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group the CLI registers, as word tuples (``("auth", "login")``)."""
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _verbs(command, (*prefix, name))


def _documented(verb: tuple[str, ...], text: str) -> bool:
    """``spctl VERB`` in the page (not as the start of a longer word), or a heading ``VERB``."""
    words = r"\s+".join(re.escape(word) for word in verb)
    if re.search(rf"spctl\s+{words}(?![\w-])", text):
        return True
    spelled = " ".join(verb)
    return any(title.strip("`").removeprefix("spctl ") == spelled for title in _sections(text))


def _cli() -> click.Group:
    command = typer.main.get_command(app)
    assert isinstance(command, click.Group)
    return command


def test_the_cli_has_its_verbs() -> None:
    # Guard against a vacuous pass: the enumeration must see the app's real verbs.
    verbs = {" ".join(verb) for verb in _verbs(_cli())}
    assert {"serve", "status", "reload", "validate", "mcp"} <= verbs


@pytest.mark.parametrize("verb", [" ".join(v) for v in _verbs(_cli())])
def test_every_cli_verb_is_in_operations_md(verb: str) -> None:
    assert _documented(tuple(verb.split()), _page("operations.md")), (
        f"`spctl {verb}` is a CLI verb but docs/operations.md has neither a heading "
        f"`spctl {verb}` nor the text `spctl {verb}`"
    )


def test_a_missing_verb_is_caught() -> None:
    text = "## Verbs\n\n`spctl status` and `spctl statusbar`\n\n### spctl stop\n"
    assert _documented(("status",), text)
    assert _documented(("stop",), text)
    assert not _documented(("start",), text)
    assert not _documented(("status", "bar"), text)
    assert not _documented(("stat",), text)


# -- registry keys -------------------------------------------------------------------------


def _declared_key_sets() -> dict[str, tuple[str, ...]]:
    """Every ``*_KEYS`` collection of strings in ``supervisor.config`` (and ``SECTIONS``)."""
    found = {"schema.SECTIONS": tuple(schema.SECTIONS)}
    for info in pkgutil.iter_modules(supervisor.config.__path__):
        module = importlib.import_module(f"supervisor.config.{info.name}")
        for name, value in vars(module).items():
            strings = isinstance(value, tuple | frozenset | set) and bool(value)
            if name.endswith("KEYS") and strings and all(isinstance(k, str) for k in value):
                found[f"{info.name}.{name}"] = tuple(value)
    return found


def _every_block_registry(root: Path) -> None:
    """A registry whose entries use every block that has keys of its own."""
    (root / "servers" / "one").mkdir(parents=True)
    (root / "servers" / "one" / "__init__.py").write_text("")
    (root / "servers.yaml").write_text(
        "servers:\n"
        "  - name: one\n"
        "    type: local\n"
        "    path: ./servers/one\n"
        "    limits: {memory: 1GiB}\n"
        "    restart: {policy: always}\n"
        "    sandbox: {network: none}\n"
        "    tools: {allow: [a*], deny: [b]}\n"
        "    prompts: {deny: [c]}\n"
        "    resources: {allow: ['x://*']}\n"
        "  - name: two\n"
        "    type: remote\n"
        "    url: https://example.com/mcp\n"
        "    auth: {type: bearer, token: t}\n"
    )
    (root / "modules.yaml").write_text(
        "modules:\n  - name: three\n    type: remote\n    url: https://example.com/rpc\n"
        "    moduleType: daemon\n"
    )


def _allowed_while_loading(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, tuple[str, ...]]:
    """Block name (``entry``, ``auth``, ``limits``…) → the keys ``Reader.keys`` allowed."""
    seen: dict[str, tuple[str, ...]] = {}
    original = Reader.keys

    def spy(self: Reader, m: MarkedMap, allowed: Collection[str], path: str) -> None:
        block = "entry" if re.fullmatch(r"\w+\[\d+\]", path) else path.rsplit(".", 1)[-1]
        seen[block] = tuple(sorted({*seen.get(block, ()), *allowed}))
        original(self, m, allowed, path)

    monkeypatch.setattr(Reader, "keys", spy)
    result = load_registry(root, environ={})
    assert not result.errors, result.errors
    return seen


def test_the_config_package_declares_its_keys() -> None:
    declared = _declared_key_sets()
    every = {key for keys in declared.values() for key in keys}
    assert {"name", "type", "path", "auth", "limits", "restart", "servers"} <= every
    assert {"token", "clientSecret", "memory", "maxRestarts"} <= every


@pytest.mark.parametrize("where", sorted(_declared_key_sets()))
def test_every_declared_key_is_in_configuration_md(where: str) -> None:
    text = _page("configuration.md")
    missing = [key for key in _declared_key_sets()[where] if f"`{key}`" not in text]
    assert not missing, f"{where}: not documented in docs/configuration.md: {missing}"


def test_every_key_a_block_allows_is_under_its_heading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each block's keys in the table of its own section (``Entry keys``, `` `auth` ``…), and
    every key the loader allows is one the package declares (no key list hidden inline)."""
    _every_block_registry(tmp_path)
    allowed = _allowed_while_loading(tmp_path, monkeypatch)
    assert {"entry", "auth", "limits", "restart", "tools", "prompts", "resources"} <= set(allowed)
    declared = {key for keys in _declared_key_sets().values() for key in keys}
    sections = _sections(_page("configuration.md"))
    for block, keys in allowed.items():
        assert set(keys) <= declared, f"{block}: keys not in a *_KEYS collection"
        title = "Entry keys" if block == "entry" else f"`{block}`"
        assert title in sections, f"docs/configuration.md has no section {title!r}"
        rows = [line for line in sections[title].splitlines() if line.startswith("|")]
        missing = [key for key in keys if not any(f"`{key}`" in row for row in rows)]
        assert not missing, f"keys of {block} missing from the table under {title!r}: {missing}"


@pytest.mark.parametrize(
    "values",
    [schema.EXTENSION_TYPES, schema.MODULE_TYPES, schema.AUTH_TYPES, schema.RESTART_POLICIES],
)
def test_every_choice_is_in_configuration_md(values: tuple[str, ...]) -> None:
    text = _page("configuration.md")
    assert [value for value in values if f"`{value}`" not in text] == []


# -- README and the site ---------------------------------------------------------------------


def test_readme_is_the_newcomers_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for command in ("make run", "make test", "spctl status"):
        assert command in readme
    targets = re.findall(r"\]\((docs/[^)#\s]+)", readme)
    assert targets, "README links into docs/"
    assert [t for t in targets if not (ROOT / t).is_file()] == []


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert [page for page in pages if page not in nav] == []
