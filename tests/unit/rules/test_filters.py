"""Per-server filters (``rules.filters``): which names pass, what a catalog advertises under
them, which requests are refused as unknown, and which globs match nothing. Table-driven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisor.config import Extension, Filter, GlobSource, Source
from supervisor.rules.filters import admits, advertised, filtered, refusal, unmatched
from worker.protocol import INVALID_PARAMS, RESOURCE_NOT_FOUND

SRC = Source(Path("servers.yaml"), 1, 1)


def server(**kw: Any) -> Extension:
    return Extension(**{"name": "gh", "section": "servers", "type": "local", "source": SRC, **kw})


ADMITS = [
    ("no filter", Filter(), "anything", True),
    ("allow matches", Filter(allow=("get_*",)), "get_issue", True),
    ("allow misses", Filter(allow=("get_*",)), "delete_repo", False),
    ("empty allow allows nothing", Filter(allow=()), "get_issue", False),
    ("deny matches", Filter(deny=("delete_*",)), "delete_repo", False),
    ("deny misses", Filter(deny=("delete_*",)), "get_issue", True),
    ("deny wins over allow", Filter(allow=("*",), deny=("get_secret",)), "get_secret", False),
    ("whole name, not a prefix", Filter(allow=("get",)), "get_issue", False),
    ("case-sensitive", Filter(allow=("get_*",)), "GET_issue", False),
    ("? is one character", Filter(allow=("v?",)), "v1", True),
    ("[seq]", Filter(deny=("[ab]*",)), "beta", False),
    ("the server's own name, not the prefixed one", Filter(allow=("get_*",)), "gh__get_x", False),
    ("a regex character is literal", Filter(allow=("a.b",)), "axb", False),
    ("URIs", Filter(allow=("file:///docs/*",)), "file:///docs/a/b.md", True),
]  # fmt: skip


@pytest.mark.parametrize(("f", "name", "ok"), [a[1:] for a in ADMITS], ids=[a[0] for a in ADMITS])
def test_admits(f: Filter, name: str, ok: bool) -> None:
    assert admits(f, name) is ok


CATALOG: dict[str, Any] = {
    "tools": [{"name": "get_issue"}, {"name": "delete_repo"}, {"name": "list_prs"}, {"x": 1}],
    "prompts": [{"name": "summary"}, {"name": "triage"}],
    "resources": [{"uri": "repo://a/readme"}, {"uri": "repo://a/settings"}],
    "resourceTemplates": [{"uriTemplate": "repo://{owner}/{name}"}, {"uriTemplate": "wiki://{p}"}],
    "other": "kept",
}


def test_advertised_keeps_only_what_passes() -> None:
    ext = server(
        tools=Filter(allow=("get_*", "list_*")),
        prompts=Filter(deny=("triage",)),
        resources=Filter(allow=("repo://*",), deny=("*/settings",)),
    )
    got = advertised(ext, CATALOG)
    assert got["tools"] == [{"name": "get_issue"}, {"name": "list_prs"}, {"x": 1}]  # malformed kept
    assert got["prompts"] == [{"name": "summary"}]
    assert got["resources"] == [{"uri": "repo://a/readme"}]
    assert got["resourceTemplates"] == [{"uriTemplate": "repo://{owner}/{name}"}]
    assert got["other"] == "kept"
    assert CATALOG["tools"][1] == {"name": "delete_repo"}  # the whole catalog is untouched


def test_a_new_upstream_tool_stays_hidden_under_an_allow_list() -> None:
    f = {"tools": Filter(allow=("get_*",))}
    grown = {**CATALOG, "tools": [*CATALOG["tools"], {"name": "new_tool"}]}
    assert [t.get("name") for t in filtered(grown, f)["tools"]] == ["get_issue", None]


def test_no_filter_is_the_catalog_itself() -> None:
    assert advertised(server(), CATALOG) == CATALOG


EXT = server(
    tools=Filter(allow=("get_*",)),
    prompts=Filter(deny=("triage",)),
    resources=Filter(deny=("repo://*/settings", "wiki://*")),
)
TOOL, PROMPT = (
    (INVALID_PARAMS, "Unknown tool: delete_repo"),
    (INVALID_PARAMS, "Unknown prompt: triage"),
)
NOT_FOUND = (RESOURCE_NOT_FOUND, "Resource not found: repo://a/settings")
REQUESTS: list[tuple[str, str, dict[str, Any], tuple[int, str] | None]] = [
    ("an allowed tool", "tools/call", {"name": "get_issue", "arguments": {}}, None),
    ("a filtered tool", "tools/call", {"name": "delete_repo"}, TOOL),
    ("an allowed prompt", "prompts/get", {"name": "summary"}, None),
    ("a filtered prompt", "prompts/get", {"name": "triage"}, PROMPT),
    ("a filtered read", "resources/read", {"uri": "repo://a/settings"}, NOT_FOUND),
    ("an allowed read", "resources/read", {"uri": "repo://a/readme"}, None),
    ("a filtered subscribe", "resources/subscribe", {"uri": "repo://a/settings"}, NOT_FOUND),
    ("unsubscribe always goes", "resources/unsubscribe", {"uri": "repo://a/settings"}, None),
    ("completion of a filtered prompt", "completion/complete",
     {"ref": {"type": "ref/prompt", "name": "triage"}}, PROMPT),
    ("completion of a filtered template", "completion/complete",
     {"ref": {"type": "ref/resource", "uri": "wiki://{p}"}},
     (RESOURCE_NOT_FOUND, "Resource not found: wiki://{p}")),
    ("completion of an allowed prompt", "completion/complete",
     {"ref": {"type": "ref/prompt", "name": "summary"}}, None),
    ("a malformed name is the server's to answer", "tools/call", {"name": 7}, None),
    ("a malformed ref too", "completion/complete", {"ref": "x"}, None),
    ("lists are not refused (they are filtered)", "tools/list", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "params", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_refusal(method: str, params: dict[str, Any], expected: tuple[int, str] | None) -> None:
    got = refusal(EXT, method, params)
    assert (None if got is None else (got.code, got.message)) == expected


def test_a_refused_resource_carries_its_uri() -> None:
    got = refusal(EXT, "resources/read", {"uri": "repo://a/settings"})
    assert got is not None and got.data == {"uri": "repo://a/settings"}


def test_unmatched_globs_are_named() -> None:
    def src(field: str, glob: str) -> GlobSource:
        return GlobSource(field, 3, 7, glob)

    typo, ok = src("servers[0].tools.allow[1]", "gte_*"), src("servers[0].tools.allow[0]", "get_*")
    deny = src("servers[0].prompts.deny[0]", "triage")
    tmpl = src("servers[0].resources.allow[0]", "wiki://*")
    gone = src("servers[0].resources.deny[0]", "ftp://*")
    ext = server(
        tools=Filter(("get_*", "gte_*"), (), (ok, typo)),
        prompts=Filter(None, ("triage",), (deny,)),
        resources=Filter(("wiki://*",), ("ftp://*",), (tmpl, gone)),
    )
    assert unmatched(ext, CATALOG) == [typo, gone]
    assert unmatched(ext, {}) == [ok, typo, deny, tmpl, gone]
