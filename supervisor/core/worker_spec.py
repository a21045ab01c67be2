"""What a worker is told at boot (its answer to the worker's ``boot`` request).

The spec travels over the private socketpair, never through argv (visible to every user
in ``ps``) or the environment (inherited by the extension's own children).
"""

from __future__ import annotations

import os
import resource
from dataclasses import replace
from pathlib import Path
from typing import Any

from supervisor.config import Auth, Extension, Secret
from supervisor.config.schema import TOKEN_FILE, RunAs
from supervisor.core.confine import DEFAULT_PATH, sandbox_policy, state_dirs
from worker.protocol import BootSpec

__all__ = [
    "DATA_HEADROOM",
    "auth_spec",
    "boot_spec",
    "build_spec",
    "plain",
    "rlimits_for",
    "run_as_problem",
    "token_file",
]

DATA_HEADROOM = 256 * 1024 * 1024


def plain(value: Any) -> Any:
    """Config values as msgpack-able plain data; secrets are revealed only here, for the worker."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def rlimits_for(ext: Extension) -> dict[str, list[int]]:
    """rlimits the worker applies to itself before importing the extension.

    ``openFiles`` → RLIMIT_NOFILE; ``cpuTime`` → RLIMIT_CPU (SIGXCPU at the soft limit, SIGKILL
    5 s later); ``memory`` → RLIMIT_DATA at twice the limit (at least +256 MiB), a hard stop for
    runaway allocation (heap and private anonymous mappings; Linux ignores RLIMIT_RSS, and
    RLIMIT_AS would count idle thread stacks); ``processes`` → RLIMIT_NPROC (per real uid,
    and not enforced for root). Core dumps are always off.
    """
    limits = ext.limits
    out: dict[str, list[int]] = {"CORE": [0, 0]}
    if limits.open_files is not None:
        out["NOFILE"] = [limits.open_files, limits.open_files]
    if limits.cpu_time is not None:
        soft = max(1, int(limits.cpu_time))
        out["CPU"] = [soft, soft + 5]
    if limits.memory is not None:
        # Generous on purpose: the watchdog and the cgroup enforce the limit itself and record
        # why; the rlimit only stops a runaway allocation (a 4 GiB malloc) before it lands.
        data = max(2 * limits.memory, limits.memory + DATA_HEADROOM)
        out["DATA"] = [data, data]
    if limits.processes is not None:
        out["NPROC"] = [limits.processes, limits.processes]
    # Never ask for more than the supervisor's own hard limit: setrlimit would refuse.
    for name, (soft, hard) in list(out.items()):
        _, cur_hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name}"))
        if cur_hard != resource.RLIM_INFINITY:
            out[name] = [min(soft, cur_hard), min(hard, cur_hard)]
    return out


def auth_spec(auth: Auth | None) -> dict[str, Any]:
    """A remote entry's ``auth`` in the boot spec's spelling, secrets revealed (for the worker)."""
    if auth is None:
        return {}
    fields = {
        "type": auth.type,
        "token": auth.token,
        "key": auth.key,
        "header": auth.header,
        "clientId": auth.client_id,
        "clientSecret": auth.client_secret,
        "tokenUrl": auth.token_url,
        "tokenAuthMethod": auth.token_auth_method,
        "resource": auth.resource,
    }
    out: dict[str, Any] = {key: plain(value) for key, value in fields.items() if value is not None}
    if auth.scopes:
        out["scopes"] = list(auth.scopes)
    if auth.type == "oauth2" and auth.grant != "client_credentials":
        out["grant"] = auth.grant
    return out


def token_file(ext: Extension) -> Path:
    """Where ``spctl auth login`` keeps the user tokens of ``ext`` (``grant:
    authorization_code``): ``<state dir>/extensions/<name>/oauth-tokens.json``."""
    return state_dirs(ext)[0] / TOKEN_FILE


def _remote_auth(ext: Extension) -> dict[str, Any]:
    out = auth_spec(ext.auth)
    if out.get("grant") == "authorization_code":
        out["tokenFile"] = str(token_file(ext))
    return out


def run_as_problem(run_as: RunAs | None, euid: int) -> str | None:
    """Why a supervisor running as ``euid`` cannot start a worker as ``run_as``, or None.

    The worker inherits our credentials and drops them, which only root may do (even
    ``setgroups([])`` needs CAP_SETGID). Checked by ``serve`` before each spawn: a runtime
    problem of this supervisor, not an error in the registry (``spctl validate`` accepts it).
    """
    if run_as is None or euid == 0:
        return None
    return f"user: {run_as.user} needs spctl to run as root (it runs as uid {euid})"


def build_spec(ext: Extension) -> dict[str, Any]:
    """The wire form of :func:`boot_spec` (what the ``boot`` request is answered with)."""
    return boot_spec(ext).to_wire()


def boot_spec(ext: Extension) -> BootSpec:
    """What the worker for ``ext`` is to host, under which limits and as which user."""
    spec = _kind_spec(ext)
    if ext.run_as is not None:  # switched to after the rlimits, before the import
        spec = replace(spec, uid=ext.run_as.uid, gid=ext.run_as.gid)
    state, _ = state_dirs(ext)
    path_env = ext.env.get("PATH") or os.environ.get("PATH") or DEFAULT_PATH
    return replace(spec, sandbox=sandbox_policy(ext, state, path_env))  # applied after user:


def _kind_spec(ext: Extension) -> BootSpec:
    name, rlimits = ext.name, rlimits_for(ext)
    if ext.type == "remote":
        # A remote MCP server (or, in modules.yaml, a JSON-RPC service: kind remote_module):
        # the worker connects to `url`. The credentials travel only here, over the private
        # channel; the worker puts them on the requests it sends.
        return BootSpec(
            name=name,
            kind="remote_module" if ext.kind == "module" else "remote",
            path=str(ext.source.file.parent),
            url=ext.url,
            auth=_remote_auth(ext),
            headers=plain(ext.headers),
            provides=ext.provides if ext.kind == "module" else (),
            rlimits=rlimits,
        )
    if ext.command is not None:
        # A stdio MCP server: the worker runs the command in `path` (default: the directory
        # of servers.yaml). Its env is already the worker's environment; nothing more to pass.
        cwd = ext.path if ext.path is not None else ext.source.file.parent
        if not cwd.is_dir():
            cwd = cwd.parent
        return BootSpec(
            name=name,
            kind="stdio",
            path=str(cwd),
            rlimits=rlimits,
            command=ext.command,
            cwd=str(cwd),
        )
    if ext.kind == "module":
        kind = "plugin" if ext.module_type == "plugin" else "daemon"
    else:
        kind = "handler"
    return BootSpec(
        name=name,
        kind=kind,
        path="" if ext.path is None else str(ext.path),  # never empty: the schema requires it
        config=plain(ext.config),
        rlimits=rlimits,
        provides=ext.provides,
    )
