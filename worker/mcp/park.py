"""A 2025-11-25 server's questions for a 2026-07-28 client: parked, asked as ``input_required``.

Theory of operation. A 2026-07-28 client has no back channel: a server that wants something
from it answers ``input_required`` and the client retries with ``inputResponses`` and the
``requestState`` it was given (SEP-2322). A server spoken to in 2025-11-25 (a stdio
``command:`` server) asks by a real request in the middle of the call instead. The worker
bridges the two: the call to the server goes on as an :class:`Exchange` that outlives the
client's request; when the server asks (:meth:`Parking.ask`, routed to it as to any call in
flight), the question is parked and the client's request is answered ``input_required`` with
the question under a key of ours and a ``requestState`` sealed by :class:`Seal` (an HMAC of
this worker's own random key over the exchange's id, the method and name of the call, the
client's name when the front knows it, and a deadline). The retry unseals it, delivers each
answer to the server's parked request and waits for what comes next: another question (another
round) or the call's result. Nothing is kept past the deadline (:data:`PARK_TTL`): the
server's call is then cancelled and its question answered with an error. A forged or expired
``requestState``, or one from before the worker restarted (a new key), is refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.mcp.ask import CAPABILITY, Asking
from worker.protocol import INVALID_PARAMS, INVALID_REQUEST
from worker.rpc import RpcError

__all__ = [
    "CAPABILITIES_KEY",
    "INPUT_METHODS",
    "MODERN",
    "PARK_TTL",
    "VERSION_KEY",
    "Exchange",
    "Parking",
    "Seal",
    "is_modern",
]

VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
MODERN = frozenset({"2026-07-28"})
"""Protocol versions without a back channel (a call carries its envelope in ``_meta``)."""
INPUT_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
"""The requests that may be answered ``input_required``."""
PARK_TTL = 300.0
"""Seconds a parked question waits for the client's retry."""
_ids = itertools.count(1)


def is_modern(meta: Mapping[str, Any] | None) -> bool:
    return bool(meta) and meta is not None and meta.get(VERSION_KEY) in MODERN


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Seal:
    """``requestState`` this worker mints and alone can open (HMAC-SHA256, a random key)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)

    def close(self, claims: dict[str, Any]) -> str:
        body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return f"spctl1.{_b64(body)}.{_b64(mac)}"

    def open(self, state: object, now: float | None = None) -> dict[str, Any]:
        """The claims of a state we sealed and that has not expired. Raises RpcError."""
        bad = RpcError(INVALID_PARAMS, "Invalid or expired requestState")
        if not isinstance(state, str) or state.count(".") != 2:
            raise bad
        prefix, body64, mac64 = state.split(".")
        try:
            body, mac = _unb64(body64), _unb64(mac64)
        except ValueError:
            raise bad from None
        good = hmac.new(self._key, body, hashlib.sha256).digest()
        if prefix != "spctl1" or not hmac.compare_digest(mac, good):
            raise bad
        claims = json.loads(body)
        if not isinstance(claims, dict) or claims.get("e", 0) < (now or time.time()):
            raise bad
        return claims


@dataclass(eq=False)
class Parking(Asking):
    """A 2026-07-28 client's call: the server's questions wait for the client's retry."""

    questions: asyncio.Queue[tuple[str, str, Any]] = field(default_factory=asyncio.Queue)
    answers: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    @classmethod
    def modern(cls, method: str, meta: Mapping[str, Any]) -> Parking:
        caps = meta.get(CAPABILITIES_KEY)
        return cls(method, None, caps if isinstance(caps, Mapping) else {})

    def refusal(self, method: str, params: Any) -> RpcError | None:
        if method not in CAPABILITY or self.ended:
            return super().refusal(method, params)
        # no back channel is needed: the answer comes with the client's retry
        return self.capability_refusal(method, params)

    async def ask(self, method: str, params: Any) -> Any:
        refusal = self.refusal(method, params)
        if refusal is not None:
            raise refusal
        key = f"{CAPABILITY[method]}-{next(_ids)}"
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.answers[key] = answer
        self.questions.put_nowait((key, method, params))
        try:
            return await answer
        finally:
            self.answers.pop(key, None)

    def end(self) -> None:
        super().end()
        for key, answer in self.answers.items():
            if not answer.done():
                answer.set_exception(
                    RpcError(
                        INVALID_REQUEST,
                        f"the {self.method} call ended before its client answered ({key})",
                    )
                )


@dataclass(eq=False)
class Exchange:
    """One server call that outlives the client's requests: the first, then each retry."""

    parking: Parking
    call: asyncio.Task[Any]
    method: str
    name: str
    client: str
    id: int = field(default_factory=lambda: next(_ids))
    expiry: asyncio.TimerHandle | None = None

    async def next(self) -> tuple[Any, bool]:
        """The call's result (``(result, True)``; raises its error), or the next question
        (``((key, method, params), False)``)."""
        question = asyncio.ensure_future(self.parking.questions.get())
        try:
            await asyncio.wait({self.call, question}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not question.done():
                question.cancel()
        if question.done() and not question.cancelled():
            return question.result(), False
        return self.call.result(), True

    def claims(self, ttl: float) -> dict[str, Any]:
        return {
            "x": self.id,
            "m": self.method,
            "n": self.name,
            "c": self.client,
            "e": time.time() + ttl,
        }

    def deliver(self, responses: Any) -> None:
        """The client's retry: each parked question gets its answer (or an error)."""
        responses = responses if isinstance(responses, Mapping) else {}
        for key, answer in list(self.parking.answers.items()):
            if answer.done():
                continue
            if key in responses:
                answer.set_result(responses[key])
            else:
                answer.set_exception(
                    RpcError(INVALID_REQUEST, f"the client's retry carried no answer to {key}")
                )

    def cancel(self) -> None:
        """Give up: the server's call is cancelled, its questions answered with an error."""
        if self.expiry is not None:
            self.expiry.cancel()
        self.parking.end()
        self.call.cancel()
