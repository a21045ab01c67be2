"""The audit log's records, as data: what one routed call becomes on one JSON line.

Pure: the core's writer (:mod:`supervisor.core.audit`) hands in what it saw (times, names,
the outcome) and gets a dict to serialise; ``spctl audit`` uses :func:`parse_since` and
:func:`matches` to filter. Arguments are left out unless asked for (``--audit-bodies``);
then they are redacted (the value of every key that looks like a secret) and cut to
:data:`BODY_LIMIT` characters of JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "AUDITED_METHODS",
    "AUDIT_FILE",
    "BODY_LIMIT",
    "REDACTED",
    "build_record",
    "iso_time",
    "matches",
    "outcome_of",
    "parse_since",
    "redact",
    "target_of",
    "truncate",
]

AUDIT_FILE = "audit.jsonl"  # in the state directory; rotated copies: audit.jsonl.1, .2

# The MCP requests the audit log records (each names one tool, resource or prompt).
AUDITED_METHODS: Mapping[str, str] = {
    "tools/call": "name",
    "resources/read": "uri",
    "prompts/get": "name",
}
BODY_LIMIT = 1024  # characters of JSON kept of a call's arguments with --audit-bodies
REDACTED = "[redacted]"
_SECRET = re.compile(
    r"token|passw|secret|key|authori[sz]|credential|cookie|session|bearer|signature|private|auth",
    re.IGNORECASE,
)
_MAX_DEPTH = 16
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def target_of(method: str, params: Mapping[str, Any] | None) -> str | None:
    """The tool name, resource URI or prompt name a request names (None if it names none)."""
    key = AUDITED_METHODS.get(method)
    if key is None or not isinstance(params, Mapping):
        return None
    value = params.get(key)
    return value if isinstance(value, str) else None


def outcome_of(result: Any = None, error_code: int | None = None) -> str:
    """``error`` (a JSON-RPC error), ``isError`` (a tool's own failure) or ``ok``."""
    if error_code is not None:
        return "error"
    if isinstance(result, Mapping) and result.get("isError") is True:
        return "isError"
    return "ok"


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with the value of every key that looks like a secret replaced."""
    if depth > _MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if _SECRET.search(str(k)) else redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)[:BODY_LIMIT]


def truncate(value: Any, limit: int = BODY_LIMIT) -> Any:
    """``value`` itself when its JSON fits in ``limit`` characters, else that JSON cut to
    ``limit`` characters and marked with a trailing ``…``."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) <= limit:
        return value
    return text[:limit] + "…"


def iso_time(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def build_record(
    *,
    time: float,
    client: str,
    extension: str,
    method: str,
    params: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    duration: float,
    result: Any = None,
    error_code: int | None = None,
    seq: int | None = None,
    bodies: bool = False,
) -> dict[str, Any]:
    """One line of the audit log. ``method``: an MCP method, or ``service`` for a plugin
    service call (then ``params`` is ``{"name": "<service>.<method>", "arguments": …}``).
    ``client``: the connection's face; a ``client`` name in ``meta`` (set by the face) is
    recorded as the client, and the face as ``via``."""
    record: dict[str, Any] = {"time": iso_time(time), "client": client, "extension": extension}
    named = meta.get("client") if isinstance(meta, Mapping) else None
    if isinstance(named, str) and named:  # the face's name of its client (token, login)
        record["client"], record["via"] = named[:256], client
    record["method"] = method
    if method == "service":
        name = params.get("name") if isinstance(params, Mapping) else None
        record["service"] = name if isinstance(name, str) else None
    else:
        field = {"tools/call": "tool", "resources/read": "uri", "prompts/get": "prompt"}
        record[field.get(method, "target")] = target_of(method, params)
    outcome = outcome_of(result, error_code)
    record["outcome"] = outcome
    if error_code is not None:
        record["code"] = error_code
    record["duration_ms"] = round(duration * 1000, 3)
    if seq is not None:
        record["seq"] = seq
    if isinstance(meta, Mapping):
        for key, field_name in (("requestId", "request_id"), ("traceparent", "traceparent")):
            value = meta.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                record[field_name] = value
        tracestate = meta.get("tracestate")
        if isinstance(tracestate, str):
            record["tracestate"] = tracestate[:256]
    if bodies and isinstance(params, Mapping) and "arguments" in params:
        record["arguments"] = truncate(redact(params.get("arguments")))
    return record


def parse_since(text: str) -> float:
    """``10m`` → 600.0 seconds (units s, m, h, d; a bare number is seconds)."""
    found = _SINCE.match(text)
    if found is None:
        raise ValueError(f"cannot read {text!r} as a duration: write e.g. 30s, 10m, 2h or 1d")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def matches(
    record: Mapping[str, Any], *, extension: str | None = None, since: float | None = None
) -> bool:
    """Whether ``record`` is of ``extension`` and no older than epoch ``since``."""
    if extension is not None and record.get("extension") != extension:
        return False
    if since is not None:
        at = _epoch(record.get("time"))
        if at is None or at < since:
            return False
    return True
