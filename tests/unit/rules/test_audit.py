"""The audit log's records (supervisor.rules.audit): fields, outcomes, redaction, truncation."""

from __future__ import annotations

import json
import time

import pytest

from supervisor.rules.audit import (
    BODY_LIMIT,
    REDACTED,
    build_record,
    matches,
    outcome_of,
    parse_since,
    redact,
    target_of,
    truncate,
)


def record(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "time": 1_700_000_000.5,
        "client": "cli uid=1000 pid=42",
        "extension": "weather",
        "method": "tools/call",
        "params": {"name": "forecast", "arguments": {"city": "Oslo", "api_key": "s3cr3t"}},
        "meta": None,
        "duration": 0.0123,
    }
    base.update(kw)
    return build_record(**base)  # type: ignore[arg-type]


def test_a_record_has_the_fields_and_no_arguments_by_default() -> None:
    r = record(seq=7)
    assert r == {
        "time": "2023-11-14T22:13:20.500Z",
        "client": "cli uid=1000 pid=42",
        "extension": "weather",
        "method": "tools/call",
        "tool": "forecast",
        "outcome": "ok",
        "duration_ms": 12.3,
        "seq": 7,
    }
    assert "Oslo" not in json.dumps(r) and "s3cr3t" not in json.dumps(r)


def test_targets_by_method() -> None:
    assert target_of("resources/read", {"uri": "echo://readme"}) == "echo://readme"
    assert target_of("prompts/get", {"name": "greet"}) == "greet"
    assert target_of("tools/list", {}) is None
    assert target_of("tools/call", {"name": 3}) is None
    assert record(method="resources/read", params={"uri": "x://y"})["uri"] == "x://y"
    assert record(method="prompts/get", params={"name": "greet"})["prompt"] == "greet"
    assert record(method="service", params={"name": "kv.get", "arguments": 1})["service"] == (
        "kv.get"
    )


def test_a_client_named_by_the_face_goes_first() -> None:
    r = record(client="front", meta={"client": "alice"})
    assert r["client"] == "alice" and r["via"] == "front"
    assert record(client="front", meta={"client": 3})["client"] == "front"
    assert "via" not in record(client="front", meta={})


def test_outcomes() -> None:
    assert outcome_of({"content": []}) == "ok"
    assert outcome_of({"isError": True}) == "isError"
    assert outcome_of(None, -32602) == "error"
    r = record(error_code=-32602)
    assert r["outcome"] == "error" and r["code"] == -32602
    assert record(result={"isError": True})["outcome"] == "isError"


def test_trace_context_and_request_id_from_meta() -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = record(meta={"traceparent": tp, "tracestate": "a=b", "requestId": 5, "progressToken": 1})
    assert r["traceparent"] == tp and r["tracestate"] == "a=b" and r["request_id"] == 5
    assert "progressToken" not in r
    assert "traceparent" not in record(meta={"traceparent": {"not": "a string"}})


def test_bodies_are_redacted_and_truncated() -> None:
    r = record(bodies=True)
    assert r["arguments"] == {"city": "Oslo", "api_key": REDACTED}
    nested = {
        "a": [{"Authorization": "Bearer x"}, {"password": "p"}],
        "cfg": {"GITHUB_TOKEN": "t", "ok": 1},
        "client_secret": "c",
        "x-api-key": "k",
    }
    text = json.dumps(redact(nested))
    for secret in ("Bearer x", '"p"', '"t"', '"c"', '"k"'):
        assert secret not in text
    assert '"ok": 1' in text
    long = record(bodies=True, params={"name": "t", "arguments": {"text": "x" * 5000}})
    assert isinstance(long["arguments"], str)
    assert len(long["arguments"]) == BODY_LIMIT + 1 and long["arguments"].endswith("…")
    assert truncate({"a": 1}) == {"a": 1}


def test_redaction_happens_before_truncation() -> None:
    args = {"padding": "y" * 2000, "token": "s3cr3t-value"}
    r = record(bodies=True, params={"name": "t", "arguments": args})
    assert "s3cr3t" not in json.dumps(r)


def test_parse_since() -> None:
    assert parse_since("10m") == 600
    assert parse_since("30s") == 30
    assert parse_since("2h") == 7200
    assert parse_since("1d") == 86400
    assert parse_since("5") == 5
    for bad in ("", "ten minutes", "10x", "-5m"):
        with pytest.raises(ValueError, match="duration"):
            parse_since(bad)


def test_matches() -> None:
    now = time.time()
    r = record(time=now - 60)
    assert matches(r)
    assert matches(r, extension="weather") and not matches(r, extension="other")
    assert matches(r, since=now - 120) and not matches(r, since=now - 30)
    assert not matches({"time": "garbage"}, since=0)
