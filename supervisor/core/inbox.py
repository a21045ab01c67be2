"""The messages a runner's inbox takes, and the callers waiting on its commands.

The messages are: typed, frozen, matched by type in ``Runner._handle``.

``Command`` comes from the runner's public methods (an operator, serve, the idle watch);
the others from the tasks of one worker incarnation (``incarnation.py``), each tagged with the
incarnation's number ``n`` so a message about a worker that is already gone is ignored, and
``BackoffDone`` from the backoff timer, tagged with the backoff it ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from supervisor.rules.exits import Exit
from supervisor.rules.goals import Cmd, Step, Wait
from supervisor.rules.states import State
from worker.protocol import ReadyInfo

__all__ = [
    "BackoffDone",
    "Command",
    "Exited",
    "Kill",
    "Message",
    "Ready",
    "SpawnFailed",
    "Spawned",
    "Waiter",
    "Waiters",
    "WorkerMessage",
]


_M = TypeVar("_M")


class Mailbox(Generic[_M]):
    """An unbounded, in-order inbox for one consumer on the event loop. It holds no resource
    (an anyio memory stream warns when a runner that never ran is collected): ``put`` after
    ``close`` is dropped, and iteration ends once it is closed and drained."""

    def __init__(self) -> None:
        self._items: deque[_M] = deque()
        self._wake = anyio.Event()
        self.closed = False

    def put(self, item: _M) -> None:
        if not self.closed:
            self._items.append(item)
            self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[_M]:
        while True:
            while self._items:
                yield self._items.popleft()
            if self.closed:
                return
            self._wake = anyio.Event()  # no await since the check: nothing is missed
            await self._wake.wait()


@dataclass(eq=False)
class Waiter:
    """A caller of a command, waiting for its outcome (``error`` None: it was reached)."""

    wait: Wait
    done: anyio.Event = field(default_factory=anyio.Event)
    seen_start: bool = False
    error: str | None = None

    def finish(self, error: str | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


_DOWN = (State.STOPPED, State.FAILED, State.DISABLED)


class Waiters:
    """The callers waiting on one runner's commands, answered as its state moves."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._waiting: list[Waiter] = []
        self.changed = anyio.Event()  # set (and replaced) at every move

    def add(self, w: Waiter) -> None:
        self._waiting.append(w)

    def moved(self, state: State, reason: str) -> None:
        """The state moved to ``state``: answer whoever waited for that (or for its failure)."""
        self.changed.set()
        self.changed = anyio.Event()
        for w in self._waiting:
            if w.wait is Wait.DOWN and state in _DOWN:
                w.finish()
            elif w.wait is not Wait.UP:
                continue
            elif state is State.STARTING:
                w.seen_start = True
            elif state is State.RUNNING and w.seen_start:
                w.finish()
            elif w.seen_start and state in (State.CRASHED, State.FAILED, State.STOPPED):
                w.finish(f"{self.name}: {state.value}: {reason}")
        self._waiting = [w for w in self._waiting if not w.done.is_set()]

    def handled(self, w: Waiter, step: Step, before: State, now: State) -> None:
        """Its command was handled (``step``, from ``before`` to ``now``): answer what is
        answered already; the rest is answered by :meth:`moved`."""
        if step is Step.REFUSE:
            w.finish(f"{self.name} is {before.value}")
        elif (
            w.wait is Wait.NOW
            or (w.wait is Wait.DOWN and now in _DOWN)
            or (w.wait is Wait.UP and now is State.RUNNING)
        ):
            w.finish()
        elif w.wait is Wait.UP and now is State.STARTING:
            w.seen_start = True
        self._waiting = [w for w in self._waiting if not w.done.is_set()]


@dataclass(frozen=True)
class Command:
    cmd: Cmd
    waiter: Waiter | None = None


@dataclass(frozen=True)
class Spawned:
    """The worker process exists and its channel is connected."""

    n: int


@dataclass(frozen=True)
class SpawnFailed:
    n: int
    error: str
    refused: bool = False  # not started on purpose (integrity): failed, no restarts


@dataclass(frozen=True)
class Ready:
    n: int
    info: ReadyInfo


@dataclass(frozen=True)
class Kill:
    """Kill the worker's tree now; ``reason`` becomes the recorded cause."""

    n: int
    reason: str
    kind: str | None = None  # "limit" or "health": what the crash is counted as


@dataclass(frozen=True)
class Exited:
    n: int
    exit: Exit


@dataclass(frozen=True)
class BackoffDone:
    token: int


WorkerMessage = Spawned | SpawnFailed | Ready | Kill | Exited
Message = Command | WorkerMessage | BackoffDone
