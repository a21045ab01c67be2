"""Subscription bookkeeping: the first subscriber and the last one are what a level passes on."""

from __future__ import annotations

from supervisor.rules.subscriptions import Subscriptions


def test_first_and_last_subscriber_of_a_uri() -> None:
    subs = Subscriptions()
    assert subs.add("a", "notes", "note://1") is True
    assert subs.add("a", "notes", "note://1") is False  # again: nothing new
    assert subs.add("b", "notes", "note://1") is False
    assert subs.add("b", "notes", "note://2") is True
    assert sorted(subs.subscribers("notes", "note://1")) == ["a", "b"]  # type: ignore[type-var]
    assert subs.uris("notes") == ["note://1", "note://2"]
    assert subs.remove("a", "notes", "note://1") is False  # b still wants it
    assert subs.remove("a", "notes", "note://1") is False  # not subscribed any more
    assert subs.remove("b", "notes", "note://1") is True
    assert subs.subscribers("notes", "note://1") == []
    assert subs.uris("notes") == ["note://2"]


def test_the_same_uri_of_two_servers_is_two_subscriptions() -> None:
    subs = Subscriptions()
    assert subs.add("a", "one", "file:///x") is True
    assert subs.add("a", "two", "file:///x") is True
    assert subs.wanted() == [("one", "file:///x"), ("two", "file:///x")]
    assert subs.has("a", "two", "file:///x") and not subs.has("b", "two", "file:///x")


def test_a_client_going_away_releases_what_only_it_held() -> None:
    subs = Subscriptions()
    subs.add("a", "notes", "note://1")
    subs.add("a", "notes", "note://2")
    subs.add("b", "notes", "note://2")
    assert subs.drop("a") == [("notes", "note://1")]
    assert subs.drop("a") == []
    assert subs.subscribers("notes", "note://2") == ["b"]
    assert subs.drop("b") == [("notes", "note://2")]
    assert subs.wanted() == []


def test_unknown_clients_and_keys_are_harmless() -> None:
    subs = Subscriptions()
    assert subs.remove("nobody", "s", "u") is False
    assert subs.uris("s") == []
    assert subs.subscribers("s", "u") == []
