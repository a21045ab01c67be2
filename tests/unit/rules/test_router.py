"""The MCP router: names, prefixes, problems, resources, pagination, fingerprints."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.rules.router import (
    Catalog,
    InvalidCursor,
    ListKind,
    Problem,
    Route,
    Router,
    RouterError,
    UnknownPrompt,
    UnknownResource,
    UnknownServer,
    UnknownTool,
    prefixed,
    valid_tool_name,
)


def tools(*names: str) -> tuple[dict[str, Any], ...]:
    return tuple({"name": n, "description": f"does {n}", "inputSchema": {}} for n in names)


def walk(
    lister: Callable[..., tuple[list[dict[str, Any]], str | None]], scope: str | None, size: int
) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following nextCursor to the end."""
    pages, cursor = [], None
    while True:
        page, cursor = lister(scope, cursor, size)
        pages.append(page)
        if cursor is None:
            return pages


def forged(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


class TestNames:
    """Prefixing and the tool name rule."""

    @pytest.mark.parametrize(
        ("server", "name", "expected"),
        [
            ("weather", "get_forecast", "weather__get_forecast"),
            ("github-mcp", "create-issue", "github-mcp__create-issue"),
            ("a", "b__c", "a__b__c"),
        ],
    )
    def test_prefixed(self, server: str, name: str, expected: str) -> None:
        assert prefixed(server, name) == expected

    @pytest.mark.parametrize(
        ("name", "valid"),
        [
            ("get_forecast", True),
            ("A-z_0-9", True),
            ("x" * 64, True),
            ("x" * 65, False),
            ("", False),
            ("a.b", False),
            ("a b", False),
            ("a/b", False),
            ("é", False),
            ("a\n", False),
        ],
    )
    def test_valid_tool_name(self, name: str, valid: bool) -> None:
        assert valid_tool_name(name) is valid

    @pytest.mark.parametrize("server", ["Weather", "we_ather", "-x", "x-", "a--b", "", "a b"])
    def test_catalog_refuses_a_server_name_that_would_break_prefixing(self, server: str) -> None:
        with pytest.raises(ValueError, match="lowercase-with-hyphens"):
            Catalog(server)


class TestToolNames:
    """What is listed where, and what is reported."""

    @pytest.mark.parametrize(
        ("tool", "reason", "on_own_scope"),
        [
            ({"name": "x" * 60}, "name 'weather__xxx", True),
            (
                {"name": "x" * 60},
                "is 69 characters after prefixing (max 64); only on /mcp/weather",
                True,
            ),
            ({"name": "get.forecast"}, "invalid characters '.'", True),
            ({"name": "a b/c"}, "invalid characters ' ' '/'", True),
            ({"name": ""}, "empty name", False),
            ({"description": "no name"}, "missing or non-string name", False),
            ({"name": 7}, "missing or non-string name", False),
        ],
    )
    def test_an_unusable_name_is_reported_not_dropped(
        self, tool: dict[str, Any], reason: str, on_own_scope: bool
    ) -> None:
        r = Router([Catalog("weather", tools=(*tools("ok"), tool))])
        assert r.list_tools(None) == (
            [{"name": "weather__ok", "description": "does ok", "inputSchema": {}}],
            None,
        )
        [problem] = r.problems
        assert (problem.server, problem.kind) == ("weather", "tool")
        assert reason in problem.reason
        own = [t["name"] for t in r.list_tools("weather")[0]]
        assert own == (["ok", tool["name"]] if on_own_scope else ["ok"])

    def test_the_same_name_in_two_servers_is_fine(self) -> None:
        r = Router([Catalog("b", tools=tools("get")), Catalog("a", tools=tools("get"))])
        assert [t["name"] for t in r.list_tools(None)[0]] == ["a__get", "b__get"]
        assert r.resolve_tool(None, "a__get") == Route("a", "get")
        assert r.resolve_tool(None, "b__get") == Route("b", "get")
        assert r.resolve_tool("a", "get") == Route("a", "get")
        assert r.resolve_tool("b", "get") == Route("b", "get")
        assert r.problems == ()

    def test_a_duplicate_within_one_server_is_reported_and_the_first_served(self) -> None:
        first = {"name": "get", "description": "first"}
        r = Router([Catalog("s", tools=(first, *tools("other"), {"name": "get"}, {"name": "get"}))])
        assert r.problems == (
            Problem("s", "tool", "get", "duplicate name: advertised 3 times, the first is served"),
        )
        assert r.list_tools("s")[0][0] == first
        assert [t["name"] for t in r.list_tools(None)[0]] == ["s__get", "s__other"]

    def test_aggregate_keeps_every_member_but_the_name(self) -> None:
        tool = {
            "name": "t",
            "title": "T",
            "description": "d",
            "inputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": True},
            "_meta": {"k": 1},
        }
        r = Router([Catalog("s", tools=(tool,))])
        assert r.list_tools(None)[0] == [{**tool, "name": "s__t"}]
        assert r.list_tools("s")[0] == [tool]

    def test_a_page_is_a_copy(self) -> None:
        r = Router([Catalog("s", tools=tools("t"))])
        r.list_tools(None)[0][0]["name"] = "changed"
        r.list_tools("s")[0][0]["name"] = "changed"
        assert r.list_tools(None)[0][0]["name"] == "s__t"
        assert r.list_tools("s")[0][0]["name"] == "t"

    @pytest.mark.parametrize(
        ("scope", "name", "error"),
        [
            (None, "s__nope", UnknownTool),
            (None, "t", UnknownTool),  # the original name is not an aggregate name
            (None, "s__t" + "x", UnknownTool),
            (None, "s__" + "x" * 70, UnknownTool),  # invalid prefixed: not on /mcp
            ("s", "s__t", UnknownTool),  # the prefixed name is not a name on /mcp/s
            ("nope", "t", UnknownServer),
        ],
    )
    def test_resolve_refuses(self, scope: str | None, name: str, error: type[RouterError]) -> None:
        r = Router([Catalog("s", tools=(*tools("t"), {"name": "x" * 70}))])
        with pytest.raises(error) as caught:
            r.resolve_tool(scope, name)
        assert caught.value.code == -32602
        assert (name if error is UnknownTool else str(scope)) in str(caught.value)

    def test_an_invalid_prefixed_name_still_resolves_on_its_own_scope(self) -> None:
        r = Router([Catalog("s", tools=({"name": "x" * 70},))])
        assert r.resolve_tool("s", "x" * 70) == Route("s", "x" * 70)


class TestPrompts:
    """Prompts are named like tools."""

    def test_prompts_are_prefixed_resolved_and_checked(self) -> None:
        prompts = (
            {"name": "summarize", "arguments": []},
            {"name": "bad name"},
            {"name": "summarize"},
        )
        r = Router([Catalog("notes", prompts=prompts)])
        assert r.list_prompts(None) == ([{"name": "notes__summarize", "arguments": []}], None)
        assert [p["name"] for p in r.list_prompts("notes")[0]] == ["summarize", "bad name"]
        assert r.resolve_prompt(None, "notes__summarize") == Route("notes", "summarize")
        assert {(p.kind, p.name) for p in r.problems} == {
            ("prompt", "bad name"),
            ("prompt", "summarize"),
        }
        with pytest.raises(UnknownPrompt, match="notes__bad name"):
            r.resolve_prompt(None, "notes__bad name")
        assert r.list_tools(None) == ([], None)


class TestResources:
    """Resources keep their URI; the aggregate remembers the owner."""

    def test_the_same_uri_in_two_servers_is_a_collision_won_by_server_name(self) -> None:
        mine = {"uri": "file:///etc/motd", "name": "motd"}
        theirs = {"uri": "file:///etc/motd", "name": "other motd"}
        for order in (
            [Catalog("zeta", resources=(theirs,)), Catalog("alpha", resources=(mine,))],
            [Catalog("alpha", resources=(mine,)), Catalog("zeta", resources=(theirs,))],
        ):
            r = Router(order)
            assert r.list_resources(None) == ([mine], None)
            assert r.resolve_resource(None, "file:///etc/motd") == Route(
                "alpha", "file:///etc/motd"
            )
            assert r.problems == (
                Problem(
                    "zeta",
                    "resource",
                    "file:///etc/motd",
                    "uri also advertised by 'alpha', which serves it on /mcp",
                ),
            )
            assert r.list_resources("zeta") == ([theirs], None)  # its own scope still has it

    def test_own_scope_routes_any_uri_to_its_server(self) -> None:
        r = Router([Catalog("files")])
        assert r.resolve_resource("files", "file:///unlisted") == Route("files", "file:///unlisted")
        with pytest.raises(UnknownServer):
            r.resolve_resource("nope", "file:///x")

    def test_an_unknown_uri_on_the_aggregate_is_resource_not_found(self) -> None:
        r = Router([Catalog("files", resources=({"uri": "file:///a", "name": "a"},))])
        with pytest.raises(UnknownResource) as caught:
            r.resolve_resource(None, "file:///b")
        assert caught.value.code == -32002

    @pytest.mark.parametrize(
        ("uri", "server"),
        [
            ("weather://forecast/paris", "weather"),
            ("weather://forecast/paris?units=metric", "weather"),
            ("weather://forecast/paris/extra", None),
            ("file:///home/me/notes.txt", "files"),
            ("file:///listed", "other"),  # a listed URI wins over a template
            ("repo://o/r/blob/src/a.py", "git"),
            ("repo://o/r/tree/src", None),
            ("mail://inbox", "mail"),
            ("mail://inbox/42", "mail"),  # first matching template in listing order
            ("nothing://x", None),
        ],
    )
    def test_templates_route_reads_on_the_aggregate(self, uri: str, server: str | None) -> None:
        def t(*templates: str) -> tuple[dict[str, Any], ...]:
            return tuple({"uriTemplate": x, "name": x} for x in templates)

        r = Router(
            [
                Catalog("weather", resource_templates=t("weather://forecast/{city}{?units}")),
                Catalog("files", resource_templates=t("file:///{+path}")),
                Catalog("other", resources=({"uri": "file:///listed", "name": "l"},)),
                Catalog("git", resource_templates=t("repo://{owner}/{repo}/blob/{+path}")),
                Catalog("mail", resource_templates=t("mail://{box}{/id}")),
                Catalog("mailx", resource_templates=t("mail://inbox/{id}")),
            ]
        )
        if server is None:
            with pytest.raises(UnknownResource):
                r.resolve_resource(None, uri)
        else:
            assert r.resolve_resource(None, uri) == Route(server, uri)

    def test_a_completion_reference_names_a_template_by_its_text(self) -> None:
        def t(*templates: str) -> tuple[dict[str, Any], ...]:
            return tuple({"uriTemplate": x, "name": x} for x in templates)

        r = Router(
            [
                Catalog("files", resource_templates=t("file:///{+path}")),
                Catalog("notes", resource_templates=t("note://{id}")),
                Catalog("other", resources=({"uri": "file:///listed", "name": "l"},)),
            ]
        )
        assert r.resolve_template(None, "note://{id}") == Route("notes", "note://{id}")
        assert r.resolve_template(None, "file:///{+path}") == Route("files", "file:///{+path}")
        assert r.resolve_template(None, "file:///listed") == Route("other", "file:///listed")
        assert r.resolve_template("notes", "anything") == Route("notes", "anything")
        with pytest.raises(UnknownResource):
            r.resolve_template(None, "mail://{box}")
        with pytest.raises(UnknownServer):
            r.resolve_template("nope", "note://{id}")

    def test_template_problems(self) -> None:
        templates = (
            {"uriTemplate": "x://{a"},
            {"uriTemplate": "x://{}"},
            {"uriTemplate": "x://{a}"},
            {"uriTemplate": "x://{a}"},
        )
        r = Router(
            [
                Catalog("s", resource_templates=templates),
                Catalog("t", resource_templates=({"uriTemplate": "x://{a}"},)),
            ]
        )
        assert [p.reason for p in r.problems] == [
            "malformed uri template; listed, but /mcp cannot route reads to it",
            "malformed uri template; listed, but /mcp cannot route reads to it",
            "duplicate uri template: advertised 2 times, the first is served",
            "uri template also advertised by 's', which serves it on /mcp",
        ]
        assert len(r.list_resource_templates(None)[0]) == 3
        assert r.resolve_resource(None, "x://b") == Route("s", "x://b")

    def test_adversarial_templates_match_in_linear_time(self) -> None:
        """A backtracking matcher would not finish before the test's timeout."""
        template = "x://" + "".join(f"{{v{i}}}a" for i in range(30)) + "{+rest}a{?q}"
        r = Router([Catalog("s", resource_templates=({"uriTemplate": template},))])
        for uri in ("x://" + "a" * 5000 + "b", "x://" + "ab" * 3000 + "?"):
            with pytest.raises(UnknownResource):
                r.resolve_resource(None, uri)


class TestPagination:
    """The router's own cursors: opaque, stable, bound to their listing."""

    @pytest.fixture
    def router(self) -> Router:
        return Router(
            Catalog(f"s{i:02d}", tools=tools(*(f"t{j:02d}" for j in range(25)))) for i in range(10)
        )

    def test_250_tools_in_pages_of_100(self, router: Router) -> None:
        pages = walk(router.list_tools, None, 100)
        assert [len(p) for p in pages] == [100, 100, 50]
        names = [t["name"] for p in pages for t in p]
        assert len(set(names)) == 250
        assert names == [f"s{i:02d}__t{j:02d}" for i in range(10) for j in range(25)]
        assert walk(router.list_tools, None, 100) == pages  # stable

    @pytest.mark.parametrize("size", [1, 7, 25, 249, 250, 251, 1000])
    def test_every_page_size_walks_the_same_list(self, router: Router, size: int) -> None:
        pages = walk(router.list_tools, "s03", size)
        assert [t["name"] for p in pages for t in p] == [f"t{j:02d}" for j in range(25)]
        assert all(len(p) == size for p in pages[:-1])

    def test_no_cursor_for_an_empty_or_single_page_listing(self) -> None:
        r = Router([Catalog("s", tools=tools("a", "b"))])
        assert r.list_tools(None, page_size=2)[1] is None
        assert r.list_prompts(None) == ([], None)
        assert Router().list_tools(None) == ([], None)

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "not base64 !",
            "%%%",
            "é",
            "x" * 5000,
            forged([1, 2]),
            forged({"v": 2, "k": "tools", "s": None, "o": 100, "a": "s03__t24"}),
            forged({"v": 1, "k": "tools", "s": None, "o": 0}),
            forged({"v": 1, "k": "tools", "s": None, "o": -5}),
            forged({"v": 1, "k": "tools", "s": None, "o": "100"}),
            forged({"v": 1, "k": "tools", "s": None, "o": 100, "a": 5}),
            forged({"v": 1, "k": "prompts", "s": None, "o": 100}),
            base64.urlsafe_b64encode(b"[" * 2000).decode(),
        ],
    )
    def test_a_bad_cursor_is_refused(self, router: Router, cursor: str) -> None:
        with pytest.raises(InvalidCursor) as caught:
            router.list_tools(None, cursor)
        assert caught.value.code == -32602

    def test_a_cursor_is_bound_to_its_kind_and_scope(self, router: Router) -> None:
        _, cursor = router.list_tools("s01", page_size=10)
        assert cursor is not None
        router.list_tools("s01", cursor)
        for lister, scope in (
            (router.list_tools, None),
            (router.list_tools, "s02"),
            (router.list_prompts, "s01"),
        ):
            with pytest.raises(InvalidCursor):
                lister(scope, cursor)

    def test_page_size_must_be_positive(self, router: Router) -> None:
        with pytest.raises(ValueError, match="page_size"):
            router.list_tools(None, page_size=0)

    def test_a_walk_survives_a_server_leaving_before_its_position(self, router: Router) -> None:
        page, cursor = router.list_tools(None, page_size=100)
        assert page[-1]["name"] == "s03__t24"
        changed = router.without("s00")
        rest, _ = changed.list_tools(None, cursor, 100)
        assert rest[0]["name"] == "s04__t00"  # after the last entry seen, not at offset 100

    def test_a_walk_survives_a_server_arriving_before_its_position(self, router: Router) -> None:
        _, cursor = router.list_tools(None, page_size=100)
        changed = router.with_catalog(Catalog("a", tools=tools("new")))
        rest, _ = changed.list_tools(None, cursor, 100)
        assert rest[0]["name"] == "s04__t00"

    def test_when_the_last_entry_seen_is_gone_the_offset_is_kept(self, router: Router) -> None:
        _, cursor = router.list_tools(None, page_size=100)
        changed = router.without("s03")
        assert changed.list_tools(None, cursor, 10)[0][0]["name"] == "s05__t00"  # offset 100
        tiny = Router([Catalog("s00", tools=tools("t00"))])
        assert tiny.list_tools(None, cursor) == ([], None)  # clamped to the end, no error

    def test_a_long_uri_leaves_the_anchor_out_but_the_walk_continues(self) -> None:
        resources = tuple(
            {"uri": f"file:///{i:03d}/" + "x" * 3000, "name": str(i)} for i in range(5)
        )
        r = Router([Catalog("s", resources=resources)])
        pages = walk(r.list_resources, None, 2)
        assert [x["name"] for p in pages for x in p] == ["0", "1", "2", "3", "4"]


class TestFingerprint:
    """It changes exactly when a scope's listing does."""

    base = (Catalog("a", tools=tools("x", "y")), Catalog("b", tools=tools("z")))

    @pytest.mark.parametrize(
        ("change", "aggregate", "a", "b"),
        [
            (lambda r: r.with_catalog(Catalog("a", tools=tools("x", "y", "w"))), True, True, False),
            (lambda r: r.with_catalog(Catalog("a", tools=tools("x"))), True, True, False),
            (lambda r: r.with_catalog(Catalog("a", tools=tools("y", "x"))), True, True, False),
            (
                lambda r: r.with_catalog(
                    Catalog(
                        "a",
                        tools=(
                            {"name": "x"},
                            *tools("y"),
                        ),
                    )
                ),
                True,
                True,
                False,
            ),
            (lambda r: r.with_catalog(Catalog("a", tools=tools("x", "y"))), False, False, False),
            (lambda r: Router(reversed(TestFingerprint.base)), False, False, False),
            (lambda r: r.with_catalog(Catalog("c", tools=tools("x"))), True, False, False),
            (lambda r: r.with_catalog(Catalog("c")), False, False, False),
            (
                lambda r: r.with_catalog(Catalog("a", tools=(*tools("x", "y"), {"name": "q q"}))),
                False,
                True,
                False,
            ),
            (
                lambda r: r.with_catalog(Catalog("a", tools=tools("x", "y", "x"))),
                False,
                False,
                False,
            ),
        ],
        ids=[
            "add",
            "remove",
            "reorder",
            "describe",
            "same",
            "same-other-order",
            "new-server",
            "new-empty-server",
            "invalid-name-only-own",
            "duplicate",
        ],
    )
    def test_tools(
        self, change: Callable[[Router], Router], aggregate: bool, a: bool, b: bool
    ) -> None:
        old = Router(self.base)
        new = change(old)
        assert (old.fingerprint(None, "tools") != new.fingerprint(None, "tools")) is aggregate
        assert (old.fingerprint("a", "tools") != new.fingerprint("a", "tools")) is a
        assert (old.fingerprint("b", "tools") != new.fingerprint("b", "tools")) is b
        assert (old.fingerprint(None) != new.fingerprint(None)) is aggregate

    def test_each_kind_has_its_own(self) -> None:
        old = Router(self.base)
        new = old.with_catalog(Catalog("a", tools=tools("x", "y"), prompts=({"name": "p"},)))
        kinds: tuple[ListKind, ...] = ("tools", "prompts", "resources", "resourceTemplates")
        changed = {k for k in kinds if old.fingerprint(None, k) != new.fingerprint(None, k)}
        assert changed == {"prompts"}

    def test_moving_a_prompt_to_another_server_changes_the_aggregate(self) -> None:
        one = Router([Catalog("a", prompts=({"name": "p"},)), Catalog("b")])
        two = Router([Catalog("a"), Catalog("b", prompts=({"name": "p"},))])
        assert one.fingerprint(None) != two.fingerprint(None)

    def test_an_unknown_scope_raises(self) -> None:
        with pytest.raises(UnknownServer):
            Router(self.base).fingerprint("nope")


class TestTable:
    """The router is an immutable value."""

    def test_without_removes_a_server(self) -> None:
        r = Router([Catalog("a", tools=tools("x")), Catalog("b", tools=tools("y"))])
        gone = r.without("a")
        assert gone.servers == ("b",)
        assert [t["name"] for t in gone.list_tools(None)[0]] == ["b__y"]
        with pytest.raises(UnknownTool):
            gone.resolve_tool(None, "a__x")
        with pytest.raises(UnknownServer):
            gone.list_tools("a")
        assert r.servers == ("a", "b")  # the old table is untouched
        assert r.resolve_tool(None, "a__x") == Route("a", "x")
        assert gone.without("a") is gone

    def test_with_catalog_replaces_and_drops_the_old_problems(self) -> None:
        r = Router([Catalog("a", tools=({"name": "bad name"},))])
        assert len(r.problems) == 1
        fixed = r.with_catalog(Catalog("a", tools=tools("good")))
        assert fixed.problems == ()
        assert fixed.servers == ("a",)
        assert fixed.catalog("a").tools == tools("good")

    def test_servers_are_sorted_and_unique(self) -> None:
        assert Router([Catalog("b"), Catalog("a-1"), Catalog("a")]).servers == ("a", "a-1", "b")
        with pytest.raises(ValueError, match="two catalogs"):
            Router([Catalog("a"), Catalog("a")])

    def test_catalog_accepts_lists(self) -> None:
        c = Catalog("a", tools=[{"name": "x"}])  # type: ignore[arg-type]
        assert c.tools == ({"name": "x"},)
        hash(Catalog("a"))


# Property: every listed aggregate name resolves back, and nothing vanishes without a problem.

_names = st.one_of(
    st.text(alphabet="abcXYZ019_-", min_size=1, max_size=12),
    st.text(alphabet="ab_. é", max_size=4),
    st.text(alphabet="ab", min_size=55, max_size=70),
)
_catalogs = st.dictionaries(
    st.from_regex(r"[a-z0-9]{1,4}(-[a-z0-9]{1,3})?", fullmatch=True),
    st.lists(_names, max_size=8),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(_catalogs, st.integers(min_value=1, max_value=7))
def test_property_every_aggregate_name_resolves_back(
    catalogs: dict[str, list[str]], page_size: int
) -> None:
    r = Router(Catalog(s, tools=tuple({"name": n} for n in names)) for s, names in catalogs.items())
    listed = [t["name"] for p in walk(r.list_tools, None, page_size) for t in p]
    assert len(listed) == len(set(listed))
    routes = {name: r.resolve_tool(None, name) for name in listed}
    for name, route in routes.items():
        assert name == prefixed(route.server, route.name)
        assert route.name in catalogs[route.server]
    reported = {(p.server, p.name) for p in r.problems}
    for server, names in catalogs.items():
        for n in names:
            assert prefixed(server, n) in routes or (server, n) in reported
        own = [t["name"] for p in walk(r.list_tools, server, page_size) for t in p]
        assert own == list(dict.fromkeys(n for n in names if n))


def test_bench_resolve_does_not_scale_with_servers() -> None:
    """Micro-benchmark (printed, not asserted on time): 1 vs 100 servers of 10 tools."""
    n = 20_000
    for count in (1, 100):
        r = Router(
            Catalog(f"server-{i}", tools=tools(*(f"tool_{j}" for j in range(10))))
            for i in range(count)
        )
        name, last = prefixed(f"server-{count - 1}", "tool_9"), f"server-{count - 1}"
        assert r.resolve_tool(None, name) == Route(last, "tool_9")
        start = time.perf_counter()
        for _ in range(n):
            r.resolve_tool(None, name)
            r.resolve_tool(last, "tool_9")
        resolve = (time.perf_counter() - start) / (2 * n)
        _, cursor = r.list_tools(None, page_size=3)  # pages 2 of both have a next cursor
        start = time.perf_counter()
        for _ in range(n // 10):
            r.list_tools(None, cursor, 3)
        page = (time.perf_counter() - start) / (n // 10)
        start = time.perf_counter()
        r.with_catalog(Catalog("zzz", tools=tools("t")))
        rebuild = time.perf_counter() - start
        print(
            f"\n{count:>3} servers: resolve {resolve * 1e9:.0f} ns, page of 3 "
            f"{page * 1e6:.1f} µs, with_catalog {rebuild * 1e3:.2f} ms"
        )
