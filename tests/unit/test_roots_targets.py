"""Which servers a client's ``notifications/roots/list_changed`` goes to
(:func:`supervisor.mcp.roots.targets`): the endpoint's server, or on ``/mcp`` those the
session called, narrowed to what the client's token reaches."""

from __future__ import annotations

from supervisor.mcp.roots import targets
from supervisor.rules.clients import Client


def test_a_server_endpoint_targets_its_server_and_the_aggregate_the_servers_called() -> None:
    assert targets("notes", [], None) == ["notes"]
    assert targets(None, {"b", "a"}, None) == ["a", "b"]
    assert targets(None, [], None) == []  # a session that called nothing tells nobody


def test_a_client_token_narrows_the_targets_to_what_it_reaches() -> None:
    notes_only = Client("ci", "0" * 64, allow=("notes__*",))
    assert targets(None, {"notes", "crm"}, notes_only) == ["notes"]
    assert targets("crm", [], notes_only) == []
