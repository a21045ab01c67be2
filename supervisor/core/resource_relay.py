"""Resource subscriptions between MCP faces (control channels) and MCP server workers.

Theory of operation: a face (the HTTP front, ``spctl mcp``) sends ``resources/subscribe`` or
``resources/unsubscribe`` [uri] for a server over its control channel, once per URI however
many of its clients want it. The relay records which channel wants which ``(server, uri)``
(:class:`~supervisor.rules.subscriptions.Subscriptions`) and tells the server's worker only
the first subscription and the last unsubscription of a URI, so several faces share one
upstream subscription. A channel that closes loses its subscriptions (the last one of a URI
is unsubscribed upstream). A worker that comes up (a restart, a lazy start) is told every
URI still wanted: subscriptions outlive workers. A stopped server is not started for a
subscription (it hears it when it starts).

The worker answers the subscription as its server does; a server without subscription
support refuses it, which is logged and not passed on: the face is still subscribed (an
extension may report updates anyway, with ``resource_updated(uri)``). Updates come back as the
worker's ``resource_updated`` [uri] notification and go to exactly the channels subscribed
to that ``(server, uri)``, as ``resource_updated`` [server, uri].
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from supervisor.core.fleet import Fleet
from supervisor.core.runner import CallTimeout, CommandFailed, Runner
from supervisor.rules.filters import admits
from supervisor.rules.states import State
from supervisor.rules.subscriptions import Subscriptions
from worker.channel import Channel, ChannelClosed
from worker.protocol import INVALID_PARAMS
from worker.rpc import RpcError

__all__ = ["SUBSCRIPTION_METHODS", "ResourceRelay"]

log = structlog.get_logger("spctl.control")

SUBSCRIPTION_METHODS = ("resources/subscribe", "resources/unsubscribe")


class ResourceRelay:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.subs = Subscriptions()
        self._watched: set[Channel] = set()

    async def request(
        self, channel: Channel, runner: Runner, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """A face's ``resources/subscribe`` or ``resources/unsubscribe``; answers ``{}``."""
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise RpcError(INVALID_PARAMS, f"{method}: params.uri must be a non-empty string")
        if method == "resources/subscribe":
            if channel not in self._watched:
                self._watched.add(channel)
                self._spawn(self._forget_when_closed, channel)
            if self.subs.add(channel, runner.name, uri):
                await self._tell(runner, method, uri)
        elif self.subs.remove(channel, runner.name, uri):
            await self._tell(runner, method, uri)
        return {}

    def server_up(self, runner: Runner) -> None:
        """A worker of ``runner`` is running: subscribe it to every URI still wanted."""
        for uri in self.subs.uris(runner.name):
            self._spawn(self._tell, runner, "resources/subscribe", uri)

    def resource_updated(self, server: str, uri: str) -> None:
        runner = self.fleet.get(server)
        if runner is not None and not admits(runner.ext.resources, uri):
            return  # a filter changed since the subscription: the URI is hidden now
        for channel in self.subs.subscribers(server, uri):
            assert isinstance(channel, Channel)
            with contextlib.suppress(ChannelClosed):
                channel.notify("resource_updated", server, uri)

    async def _forget_when_closed(self, channel: Channel) -> None:
        await channel.wait_closed()
        self._watched.discard(channel)
        for server, uri in self.subs.drop(channel):
            runner = self.fleet.get(server)
            if runner is not None:
                await self._tell(runner, "resources/unsubscribe", uri)

    async def _tell(self, runner: Runner, method: str, uri: str) -> None:
        if runner.state is not State.RUNNING:
            return  # told when it comes up (server_up), if still wanted
        try:
            await runner.mcp(method, {"uri": uri})
        except (CommandFailed, CallTimeout, RpcError) as exc:
            log.info(
                "resource subscription not taken by the server",
                extension=runner.name,
                method=method,
                uri=uri,
                error=str(exc),
            )

    def _spawn(self, fn: Any, *args: Any) -> None:
        self.fleet.start_soon(fn, *args)  # dropped only before serving starts: nothing to tell
