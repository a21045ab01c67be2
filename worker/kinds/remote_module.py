"""The remote_module kind: a module at an http(s) URL (``type: remote`` in modules.yaml).

Theory of operation. A remote module is an HTTP(S) service that speaks JSON-RPC 2.0 over POST
to its ``url``: one request per call, method ``<service>.<method>``, the call's params as
``params`` (left out when there are none). The worker that hosts it holds one ``httpx2`` client
with the entry's ``headers`` and :class:`~worker.kinds.remote_auth.Credentials` (the same
bearer / API key / OAuth2 client-credentials auth as remote MCP servers), and proxies the
supervisor's ``service`` requests to it (:meth:`RemoteModule.call`): only the services in
``provides`` (the supervisor checks that too); the ``result`` is the call's result, a JSON-RPC
``error`` becomes an :class:`RpcError` with its code, message and data unchanged, and no answer
(cannot connect, an HTTP error status, a body that is not a JSON-RPC 2.0 response) becomes
``-32000 "<name>: <why> from <url>"``. A call has no deadline of its own: the entry's
``timeout:`` is the supervisor's, whose ``$cancel`` cancels the HTTP request.

The probe. Before saying ``ready``, and on each health ping of the supervisor, the worker sends
a request for :data:`PROBE` (``rpc.ping``: JSON-RPC reserves ``rpc.``-names, so it is nobody's
service method). Any well-formed JSON-RPC 2.0 response, a result or an error such as -32601
(method not found), proves the service is there and takes the credentials; 401/403, no
connection, no answer within :data:`PROBE_TIMEOUT` or an answer that is not JSON-RPC are
failures. At start that is a :class:`RemoteError` (the host reports it and exits 1: the restart
policy applies) whose message names the extension, the URL (through
:func:`~worker.kinds.remote_auth.display`: no user info, no query) and the cause, never a
secret. While running, probes go one at a time, and :data:`PROBE_MISSES` failures in a row
resolve :attr:`RemoteModule.exited`: the host ends the worker (non-zero) and the supervisor
restarts it with backoff. A ``moduleType: daemon`` remote module provides nothing: it is only
probed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

from worker.kinds.base import LoadFailed, Notify, Unavailable, Verdict
from worker.kinds.remote_auth import (
    Credentials,
    LoginNeeded,
    RemoteAuth,
    RemoteError,
    display,
    status_text,
)
from worker.log import say
from worker.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, SERVICE, SERVICE_ERROR, BootSpec
from worker.rpc import RpcError
from worker.tls import tls_for

__all__ = [
    "PROBE",
    "PROBE_MISSES",
    "PROBE_TIMEOUT",
    "SERVICE_ERROR",
    "RemoteError",
    "RemoteModule",
    "RemoteModuleKind",
    "RemoteModuleSpec",
    "load",
]

PROBE = "rpc.ping"
PROBE_TIMEOUT = 10.0
PROBE_MISSES = 2
CONNECT_TIMEOUT = 10.0
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


@dataclass(frozen=True)
class RemoteModuleSpec:
    """Which service, how to authenticate, the extra headers and the services it provides."""

    name: str
    url: str
    auth: RemoteAuth | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry secrets
    provides: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        name: str,
        url: str | None,
        auth: Mapping[str, Any],
        headers: Mapping[str, str],
        provides: tuple[str, ...],
    ) -> RemoteModuleSpec:
        """From the boot spec's fields. Raises ValueError naming the bad one."""
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError("boot spec field 'url' must be an http(s) URL for 'remote_module'")
        parsed = RemoteAuth.parse(auth) if auth else None
        return cls(name, url, parsed, dict(headers), tuple(provides))


class RemoteModule:
    """One remote module and the HTTP client to it; see the module docstring."""

    def __init__(self, spec: RemoteModuleSpec) -> None:
        self.spec = spec
        self.where = display(spec.url)
        self.label = f"remote module {spec.name}"
        self.credentials = Credentials(
            spec.auth, spec.url, spec.headers, spec.name, self._login_needed
        )
        self.client = httpx2.AsyncClient(
            headers=dict(spec.headers),
            timeout=httpx2.Timeout(None, connect=CONNECT_TIMEOUT),
            auth=self.credentials,
            verify=tls_for(spec.url),
        )
        self.exited: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        """Resolves with why the service is considered gone (the host then ends the worker)."""
        self._ids = itertools.count(1)
        self._probing: asyncio.Task[None] | None = None
        self._missed = 0
        self._closing = False

    @property
    def metadata(self) -> dict[str, Any]:
        auth = self.spec.auth.type if self.spec.auth is not None else "none"
        return {"url": self.where, "auth": auth, "provides": list(self.spec.provides)}

    async def start(self) -> None:
        """Get a token (oauth2) and probe the service; RemoteError (safe to show) if not."""
        try:
            if self.spec.auth is not None and self.spec.auth.type == "oauth2":
                await self.credentials.token()
            await self._post(PROBE, None, PROBE_TIMEOUT)
        except RemoteError as e:
            raise type(e)(f"{self.label}: {e}") from None  # LoginNeeded stays one

    def _login_needed(self, error: LoginNeeded) -> None:
        """A refresh failed while the module ran: it is over (the next start says why)."""
        if not self._closing and not self.exited.done():
            self.exited.set_result(f"needs a new login: {error}")

    async def call(self, name: str, params: Any = None) -> Any:
        """The ``service`` request: ``<service>.<method>`` with ``params``, over JSON-RPC."""
        if not isinstance(name, str) or "." not in name:
            raise RpcError(INVALID_PARAMS, f"service: {name!r} is not '<service>.<method>'")
        service = name.split(".", 1)[0]
        if service not in self.spec.provides:
            have = ", ".join(self.spec.provides) or "nothing"
            raise RpcError(
                METHOD_NOT_FOUND, f"{self.spec.name} does not provide {service!r} ({have})"
            )
        if params is not None and not isinstance(params, Mapping | list | tuple):
            raise RpcError(INVALID_PARAMS, "service params must be a map, a list or null")
        try:
            answer = await self._post(name, params, None)
        except RemoteError as e:
            raise RpcError(SERVICE_ERROR, f"{name}: {e}") from None
        error = answer.get("error")
        if error is not None:
            raise RpcError(error["code"], error["message"], error.get("data"))
        return answer.get("result")

    async def _post(self, method: str, params: Any, timeout: float | None) -> dict[str, Any]:
        """One JSON-RPC request; the response object (with ``result`` or a well-formed
        ``error``). Raises RemoteError saying why there is no such answer."""
        msgid = next(self._ids)
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": msgid, "method": method}
        if params is not None:
            request["params"] = params
        try:
            body = json.dumps(request, ensure_ascii=False).encode()
        except (TypeError, ValueError) as e:
            raise RemoteError(f"params cannot be sent as JSON: {e}") from None
        try:
            async with asyncio.timeout(timeout):
                response = await self.client.post(self.spec.url, content=body, headers=_HEADERS)
        except RemoteError:
            raise  # the token endpoint's answer, already in words
        except TimeoutError:
            raise RemoteError(f"no answer from {self.where} within {timeout:g}s") from None
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as e:
            raise RemoteError(f"cannot connect to {self.where}: {_detail(e)}") from None
        except Exception as e:  # httpx2's and the transport's errors
            raise RemoteError(f"{type(e).__name__} from {self.where}: {_detail(e)}") from None
        status = status_text(response)
        if response.status_code in (401, 403):
            raise RemoteError(f"{status} from {self.where}: check auth")
        answer = _answer(response.content, msgid)
        if answer is not None:
            return answer  # even with an error status: the JSON-RPC error says more
        if response.is_success:
            raise RemoteError(f"{status} from {self.where}: not a JSON-RPC 2.0 response")
        raise RemoteError(f"{status} from {self.where}")

    # -- health ---------------------------------------------------------------------------

    def health_ping(self) -> None:
        """The supervisor pinged the worker: probe the service too (unless a probe is out)."""
        if self._probing is None and not self._closing and not self.exited.done():
            self._probing = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        try:
            await self._post(PROBE, None, PROBE_TIMEOUT)
            self._missed = 0
        except RemoteError as e:
            self._missed += 1
            say(f"health check of {self.where} failed ({self._missed}/{PROBE_MISSES}): {e}")
            if self._missed >= PROBE_MISSES and not self._closing and not self.exited.done():
                self.exited.set_result(f"failed {self._missed} health checks in a row: {e}")
        finally:
            self._probing = None

    async def close(self) -> None:
        self._closing = True
        if self._probing is not None:
            self._probing.cancel()
        await self.client.aclose()


class RemoteModuleKind:
    """Kind ``remote_module``: probed before ``ready`` (unreachable: :class:`Unavailable`,
    exit 1) and on each health ping; serves ``service`` until the probes fail."""

    kind = "remote_module"

    def __init__(self, module: RemoteModule) -> None:
        self.module = module
        self.handlers: Mapping[str, Callable[..., Any]] = {SERVICE: module.call}

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.module.metadata

    async def start(self) -> None:
        try:
            await self.module.start()
        except LoginNeeded as e:  # a restart cannot help: a load error (then failed)
            raise LoadFailed(str(e)) from Unavailable(str(e))
        except RemoteError as e:
            raise Unavailable(str(e)) from None

    async def wait(self) -> Verdict:
        how = await self.module.exited
        return Verdict.gone(f"the {self.module.label} {how}")

    def on_ping(self) -> None:
        self.module.health_ping()

    async def close(self) -> None:
        await self.module.close()


async def load(spec: BootSpec, notify: Notify) -> RemoteModuleKind:
    """Check the URL, auth and headers (a bad one is a load error); nothing is sent yet."""
    parsed = RemoteModuleSpec.parse(spec.name, spec.url, spec.auth, spec.headers, spec.provides)
    return RemoteModuleKind(RemoteModule(parsed))


def _detail(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _answer(content: bytes, msgid: int) -> dict[str, Any] | None:
    """The JSON-RPC 2.0 response to ``msgid`` in ``content``, or None if there is none."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
        return None
    if "error" in data:
        error = data["error"]
        code = error.get("code") if isinstance(error, dict) else None
        if isinstance(code, bool) or not isinstance(code, int):
            return None
        if not isinstance(error.get("message"), str):
            return None
        # null: the service could not read our request's id (still a JSON-RPC service)
        return data if data.get("id") in (msgid, None) else None
    return data if "result" in data and data.get("id") == msgid else None
