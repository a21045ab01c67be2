"""Who is subscribed to which resource of which server (pure bookkeeping, no I/O).

MCP clients subscribe to resource URIs (``resources/subscribe``, or the
``resourceSubscriptions`` of a 2026-07-28 ``subscriptions/listen``) and expect
``notifications/resources/updated`` when one changes. Between a client and the server there
are two fan-ins: many sessions share one front (or ``spctl mcp``) process, and several such
processes share one supervisor. Each level keeps one :class:`Subscriptions` and passes a
subscription on only when it is the first for that ``(server, uri)``, and an unsubscription
only when it was the last, so the server hears one subscribe per URI however many clients
want it, and an update fans back out to exactly the clients that asked.

A *client* is any hashable key: a session's connection, a listen stream, a control channel.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["Key", "Subscriptions"]

Key = tuple[str, str]  # (server, uri)


class Subscriptions:
    def __init__(self) -> None:
        self._by_client: dict[Hashable, set[Key]] = {}
        self._by_key: dict[Key, set[Hashable]] = {}

    def add(self, client: Hashable, server: str, uri: str) -> bool:
        """Record it; True when it is the first subscriber of ``(server, uri)``."""
        key = (server, uri)
        mine = self._by_client.setdefault(client, set())
        if key in mine:
            return False
        mine.add(key)
        others = self._by_key.setdefault(key, set())
        others.add(client)
        return len(others) == 1

    def remove(self, client: Hashable, server: str, uri: str) -> bool:
        """Forget it; True when that was the last subscriber of ``(server, uri)``."""
        key = (server, uri)
        mine = self._by_client.get(client)
        if mine is None or key not in mine:
            return False
        mine.discard(key)
        if not mine:
            del self._by_client[client]
        return self._release(client, key)

    def drop(self, client: Hashable) -> list[Key]:
        """Forget every subscription of ``client`` (it went away); the keys it was the last
        subscriber of, in a stable order."""
        last = [key for key in self._by_client.pop(client, set()) if self._release(client, key)]
        return sorted(last)

    def subscribers(self, server: str, uri: str) -> list[Hashable]:
        return list(self._by_key.get((server, uri), ()))

    def has(self, client: Hashable, server: str, uri: str) -> bool:
        return (server, uri) in self._by_client.get(client, ())

    def uris(self, server: str) -> list[str]:
        """The URIs of ``server`` that someone is subscribed to, sorted."""
        return sorted(uri for s, uri in self._by_key if s == server)

    def wanted(self) -> list[Key]:
        return sorted(self._by_key)

    def _release(self, client: Hashable, key: Key) -> bool:
        others = self._by_key.get(key)
        if others is None:
            return False
        others.discard(client)
        if others:
            return False
        del self._by_key[key]
        return True
