"""Per-client tokens (``rules.clients``): parsing the clients file (each bad input named by
file, line and field), matching tokens to clients, and what each client may reach."""

from __future__ import annotations

import pytest

from supervisor.rules.clients import (
    Client,
    Clients,
    ClientsError,
    check_glob,
    hash_token,
    parse,
    render,
)

H1 = hash_token("token-one")
H2 = hash_token("token-two")

GOOD = f"""\
# comment
[clients.alice]
sha256 = "{H1}"
allow = ["notes__*", "time"]
created = "2026-12-02T14:30:00Z"

[clients."bob"]
sha256 = "{H2}"
allow = ["*"]
readOnly = true
"""


def test_parse_reads_every_field() -> None:
    clients = parse(GOOD, "/s/clients.toml")
    alice, bob = clients.clients
    assert alice == Client("alice", H1, ("notes__*", "time"), False, "2026-12-02T14:30:00Z")
    assert (bob.name, bob.read_only, bob.created) == ("bob", True, None)


def test_render_round_trips() -> None:
    clients = parse(GOOD)
    assert parse(render(clients.clients)) == clients


def test_an_empty_file_has_no_clients() -> None:
    assert parse("") == Clients()
    assert Clients().match(b"anything") is None


A = f'[clients.a]\nsha256 = "{H1}"\n'  # a client "a" at line 1, up to its allow
ALL = 'allow = ["*"]\n'
B = A.replace(".a]", ".b]")
BAD = [
    ("not toml", "[clients.a\n", "/s/c.toml: not valid TOML"),
    ("top-level key", "x = 1\n", "/s/c.toml: unknown top-level key 'x'"),
    ("bad name", f'\n[clients."a b"]\nsha256 = "{H1}"\n{ALL}', "/s/c.toml:2: clients.a b: client"),
    ("unknown field", f'{A}{ALL}token = "x"\n', "/s/c.toml:1: clients.a.token: unknown field"),
    ("no hash", f"[clients.a]\n{ALL}", "/s/c.toml:1: clients.a.sha256: must be the token's"),
    ("short hash", f'[clients.a]\nsha256 = "abc"\n{ALL}', "clients.a.sha256: must be"),
    ("upper hash", f'[clients.a]\nsha256 = "{H1.upper()}"\n{ALL}', "clients.a.sha256"),
    ("no allow", f"\n\n{A}", "/s/c.toml:3: clients.a.allow: must be a non-empty list"),
    ("empty allow", f"{A}allow = []\n", "clients.a.allow: must be a non-empty"),
    ("allow not strings", f"{A}allow = [1]\n", "clients.a.allow: must be"),
    ("bad server glob", f'{A}allow = ["Notes"]\n', "clients.a.allow: allow glob 'Notes'"),
    ("nothing after __", f'{A}allow = ["notes__"]\n', "nothing after '__'"),
    ("readOnly not bool", f'{A}{ALL}readOnly = "yes"\n', "clients.a.readOnly: must be true or"),
    ("created not str", f"{A}{ALL}created = 3\n", "clients.a.created: must be a string"),
    ("same hash twice", f"{A}{ALL}{B}{ALL}", "/s/c.toml:4: clients.b.sha256: the same"),
    ("client not a table", "clients = 3\n", "'clients' must be tables"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_named(text: str, message: str) -> None:
    with pytest.raises(ClientsError) as err:
        parse(text, "/s/c.toml")
    assert message in str(err.value)


def test_errors_never_show_a_hash() -> None:
    with pytest.raises(ClientsError) as err:
        parse(f"{A}{ALL}readOnly = 1\n", "c")
    assert H1 not in str(err.value)


def test_match_finds_the_client_of_a_token() -> None:
    clients = parse(GOOD)
    assert clients.match(b"token-one") is clients.clients[0]
    assert clients.match(b"token-two") is clients.clients[1]
    assert clients.match(b"token-three") is None
    assert clients.match(b"") is None


REACH = [
    (("notes__*",), "notes", True),
    (("notes__*",), "time", False),
    (("notes",), "notes", True),
    (("no*",), "notes", True),
    (("notes__get_*",), "notes", True),
    (("*",), "anything", True),
]


@pytest.mark.parametrize(("allow", "server", "expected"), REACH)
def test_reaches(allow: tuple[str, ...], server: str, expected: bool) -> None:
    assert Client("c", H1, allow).reaches(server) is expected


ADMITS = [
    (("notes__*",), "notes", "add", True),
    (("notes__*",), "time", "now", False),
    (("notes",), "notes", "notes://readme", True),  # a whole server: resources too
    (("notes__get_*",), "notes", "get_note", True),
    (("notes__get_*",), "notes", "delete_note", False),
    (("notes__get_*", "time"), "time", "now", True),
    (("*__get_*",), "time", "get_now", True),
    (("*__get_*",), "time", "now", False),
    (("notes__get",), "notes", "get_note", False),  # whole names, not prefixes
]


@pytest.mark.parametrize(("allow", "server", "name", "expected"), ADMITS)
def test_admits(allow: tuple[str, ...], server: str, name: str, expected: bool) -> None:
    assert Client("c", H1, allow).admits(server, name) is expected


def test_read_only_admits_only_tools_annotated_read_only() -> None:
    c = Client("c", H1, ("*",), read_only=True)
    assert c.admits_tool("notes", {"name": "get", "annotations": {"readOnlyHint": True}})
    assert not c.admits_tool("notes", {"name": "put", "annotations": {"readOnlyHint": False}})
    assert not c.admits_tool("notes", {"name": "put"})
    assert c.admits("notes", "notes://readme")  # resources and prompts: as the globs say
    assert not c.everything


def test_everything() -> None:
    assert Client("c", H1, ("*",)).everything
    assert Client("c", H1, ("notes", "*")).everything
    assert not Client("c", H1, ("notes__*",)).everything
    assert not Client("c", H1, ("*__x",)).everything


def test_with_client_and_without() -> None:
    clients = Clients().with_client(Client("a", H1)).with_client(Client("b", H2))
    replaced = clients.with_client(Client("a", H1, ("x",)))
    assert [c.name for c in replaced.clients] == ["b", "a"]
    assert replaced.get("a") == Client("a", H1, ("x",))
    assert [c.name for c in clients.without("a").clients] == ["b"]


@pytest.mark.parametrize("glob", ["notes", "notes__*", "*", "a-b__x_y", "[ab]*__*"])
def test_good_globs(glob: str) -> None:
    assert check_glob(glob) is None
