"""Which client a bearer token belongs to: the ``--token-file`` token and the clients file.

The front asks :meth:`ClientTokens.identify` once per request (from :class:`Guard`). The clients
file is re-read when it changes: each request stats it (a few microseconds) and a new stamp
(inode, size, mtime, mode) reloads it, so ``spctl token add|remove`` holds from the next request on,
with no reload. A file that became invalid (bad TOML, readable by others) is logged and the last
good clients are kept; a file that is gone has no clients. Once a clients file was seen (or
with ``--token-file``) every request needs a token: deleting the file never opens the front.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import structlog

from supervisor.clients_file import Stamp, load, stamp
from supervisor.rules.clients import FULL_ACCESS, Client, Clients, ClientsError, hash_token

__all__ = ["ClientTokens"]

log = structlog.get_logger("spctl.front")


class ClientTokens:
    """The clients the front knows. Raises ClientsError at construction for a bad file."""

    def __init__(self, path: Path | None, token: bytes | None = None) -> None:
        self.path = path
        self._full = None if token is None else Client(FULL_ACCESS, hash_token(token))
        self._token = token
        self._stamp: Stamp | None = None
        self._bad: Stamp | None = None  # the stamp of a file found invalid (logged once)
        self.clients = Clients()
        self.required = token is not None
        if path is not None:
            self._stamp = stamp(path)
            if self._stamp is not None:
                self.clients = load(path)
                self.required = True

    def refresh(self) -> None:
        """Re-read the clients file if it changed since it was last read."""
        if self.path is None:
            return
        now = stamp(self.path)
        if now == self._stamp or (now is not None and now == self._bad):
            return
        try:
            clients = load(self.path)
        except FileNotFoundError:  # gone (now is None), or between the stat and the open
            self._stamp, self.clients = None, Clients()
            log.info("clients file gone: no per-client tokens", path=str(self.path))
            return
        except ClientsError as exc:
            self._bad = now
            log.error("clients file refused; keeping the previous clients", error=str(exc))
            return
        self._stamp, self._bad, self.clients, self.required = now, None, clients, True
        log.info("clients file read", path=str(self.path), clients=len(clients.clients))

    def identify(self, auth: bytes | None) -> Client | None:
        """The client of an ``Authorization`` header value, or None (missing, not a bearer
        token, or no client has it)."""
        if auth is None:
            return None
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        given = given.strip()
        client = self.clients.match(given)
        if self._token is not None and hmac.compare_digest(given, self._token):
            client = self._full
        return client
