"""A server's requests to the client of a call (:mod:`worker.mcp.ask`): what a call's meta
allows, every refusal's reason, and a question outliving its call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from worker.mcp import ask as ask_module
from worker.mcp.ask import ELICITATION_COMPLETE, OFFERED, Asking, completed, set_asker
from worker.protocol import INVALID_REQUEST, METHOD_NOT_FOUND
from worker.rpc import RpcError

pytestmark = pytest.mark.anyio

EVERYTHING = {"elicitation": {"form": {}, "url": {}}, "sampling": {}, "roots": {}}


class Seen(list[tuple[Any, ...]]):
    """What reached the client; ``reached`` is set by each question."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()


@pytest.fixture
def asked() -> Iterator[Seen]:
    seen = Seen()

    async def asker(token: int, method: str, params: Any) -> Any:
        seen.append((token, method, params))
        seen.reached.set()
        if method == "roots/list":
            await asyncio.Event().wait()  # the user never answers
        if method == "sampling/createMessage":
            raise RpcError(-1, "the user declined")
        return {"action": "accept", "content": {"name": "Ada"}}

    set_asker(asker)
    yield seen
    set_asker(None)


def calling(capabilities: dict[str, Any] | None = None, token: Any = 7) -> Asking:
    return Asking.of("tools/call", {"ask": {"token": token, "capabilities": capabilities or {}}})


def test_the_worker_offers_what_it_can_forward() -> None:
    assert set(OFFERED) == {"elicitation", "sampling", "roots"}


async def test_a_call_with_the_capability_asks_its_client(asked: list[Any]) -> None:
    params = {"message": "Name?", "requestedSchema": {"type": "object"}}
    answer = await calling(EVERYTHING).ask("elicitation/create", params)
    assert answer == {"action": "accept", "content": {"name": "Ada"}}
    assert asked == [(7, "elicitation/create", params)]


async def test_the_clients_error_reaches_the_server(asked: list[Any]) -> None:
    with pytest.raises(RpcError) as err:
        await calling(EVERYTHING).ask("sampling/createMessage", {})
    assert (err.value.code, err.value.message) == (-1, "the user declined")


@pytest.mark.parametrize(
    ("meta", "method", "params", "reason"),
    [
        (None, "roots/list", None, "cannot be asked (it has no back channel"),
        ({"ask": {"token": "7"}}, "roots/list", None, "cannot be asked"),
        ({"ask": {"token": 7, "capabilities": {}}}, "roots/list", None, "the roots capability"),
        (
            {"ask": {"token": 7, "capabilities": {"elicitation": {"form": {}}}}},
            "elicitation/create",
            {"mode": "url", "url": "https://x"},
            "URL-mode elicitation",
        ),
        (
            {"ask": {"token": 7, "capabilities": {"sampling": True}}},
            "sampling/createMessage",
            {},
            "the sampling capability",
        ),
    ],
)
async def test_refusals_name_their_cause(
    asked: list[Any], meta: Any, method: str, params: Any, reason: str
) -> None:
    with pytest.raises(RpcError) as err:
        await Asking.of("tools/call", meta).ask(method, params)
    assert err.value.code == INVALID_REQUEST
    assert reason in err.value.message
    assert asked == []  # nothing went to the client


async def test_an_unknown_method_is_not_found(asked: list[Any]) -> None:
    with pytest.raises(RpcError) as err:
        await calling(EVERYTHING).ask("tasks/get", {})
    assert (err.value.code, err.value.message) == (METHOD_NOT_FOUND, "Method not found: tasks/get")


async def test_the_end_of_the_call_ends_its_question(asked: Seen) -> None:
    call = calling(EVERYTHING)
    question = asyncio.ensure_future(call.ask("roots/list", None))
    async with asyncio.timeout(5):
        await asked.reached.wait()  # at the (never answering) client
    call.end()
    with pytest.raises(RpcError) as err:
        await question
    assert err.value.message == (
        "the tools/call call ended before its client answered roots/list: "
        "the answer would go nowhere"
    )
    assert not call.tasks
    with pytest.raises(RpcError, match="the tools/call call has ended"):
        await call.ask("elicitation/create", {})  # and nothing more is asked


async def test_a_completion_goes_to_the_client_asked_that_url_elicitation(asked: Seen) -> None:
    """``notifications/elicitation/complete`` reaches the token of the call whose client got
    the URL-mode request of that id, even after the call ended; an unknown id is dropped."""
    url = {"mode": "url", "message": "Sign in", "url": "https://x/", "elicitationId": "u-9"}
    call = calling(EVERYTHING, token=11)
    await call.ask("elicitation/create", url)
    call.end()
    asked.clear()
    asked.reached.clear()
    completed({"elicitationId": "nobody-asked"})
    completed({"elicitationId": "u-9"})
    await asyncio.wait_for(asked.reached.wait(), 5)
    assert asked == [(11, ELICITATION_COMPLETE, {"elicitationId": "u-9"})]


def test_the_worker_offers_url_elicitation() -> None:
    assert OFFERED["elicitation"] == {"form": {}, "url": {}}


def test_only_a_call_that_sent_a_url_elicitation_lingers_after_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(ask_module.time, "monotonic", lambda: now[0])
    kept: ask_module.Lingering[str] = ask_module.Lingering()
    kept.asked(1, "elicitation/create", {"mode": "form", "message": "name?"})
    kept.asked(2, "elicitation/create", {"mode": "url", "elicitationId": "e", "url": "x"})
    kept.asked(3, "sampling/createMessage", {"mode": "url"})
    for token in (1, 2, 3):
        kept.ended(token, f"caller {token}")
    complete = ask_module.ELICITATION_COMPLETE
    assert [kept.reach(t, complete) for t in (1, 2, 3)] == [None, "caller 2", None]
    assert kept.reach(2, "elicitation/create") is None  # only its completion goes on
    now[0] += ask_module.COMPLETE_WINDOW
    assert kept.reach(2, complete) is None  # the window is over


async def test_after_a_roots_change_only_roots_list_reaches_that_client_within_the_window(
    asked: Seen,
) -> None:
    """``roots_changed`` [token]: the server's out-of-call roots/list goes to that token's
    client; anything else is refused naming why; once the window is over, so is roots/list."""
    stand_in = ask_module.roots_asking(11, window=60)
    assert stand_in is not None and ask_module.roots_asking("11") is None
    with pytest.raises(RpcError) as err:
        await stand_in.ask("elicitation/create", {"message": "?", "requestedSchema": {}})
    assert err.value.code == INVALID_REQUEST
    assert "only its roots/list goes to it" in err.value.message
    question = asyncio.ensure_future(stand_in.ask("roots/list", None))
    async with asyncio.timeout(5):
        await asked.reached.wait()
    assert asked == [(11, "roots/list", None)]
    stand_in.end()  # what the window's end does
    with pytest.raises(RpcError):
        await question
    with pytest.raises(RpcError) as err:
        await stand_in.ask("roots/list", None)
    assert "roots/list_changed was more than 60s ago" in err.value.message


def test_the_roots_window_reaches_a_caller_for_roots_list_only_until_it_expires() -> None:
    window: ask_module.RootsWindow[str] = ask_module.RootsWindow()
    window.add(3, "front")
    assert window.reach(3, "roots/list") == "front"
    assert window.reach(3, "elicitation/create") is None  # nothing else rides on it
    assert window.reach(4, "roots/list") is None and window.reach("3", "roots/list") is None
    gone: ask_module.RootsWindow[str] = ask_module.RootsWindow(window=0.0)
    gone.add(3, "front")
    assert gone.reach(3, "roots/list") is None and len(gone) == 0  # expired, dropped
    capped: ask_module.RootsWindow[str] = ask_module.RootsWindow(cap=2)
    for token in (1, 2, 3):  # a flood of notifications: the oldest goes first
        capped.add(token, f"client {token}")
    assert len(capped) == 2 and capped.reach(1, "roots/list") is None
    assert capped.reach(3, "roots/list") == "client 3"
