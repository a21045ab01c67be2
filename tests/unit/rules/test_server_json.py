"""The server.json → entry mapping of ``spctl add`` (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor.rules.server_json import ServerJsonError, plan_from, unwrap

SCHEMA = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"


def doc(**extra: Any) -> dict[str, Any]:
    return {"$schema": SCHEMA, "name": "io.github.x/y", "version": "1.0.0", **extra}


def pypi(**extra: Any) -> dict[str, Any]:
    return {
        "registryType": "pypi",
        "identifier": "y-server",
        "version": "1.2.3",
        "transport": {"type": "stdio"},
        **extra,
    }


def test_pypi_is_preferred_and_arguments_are_filled() -> None:
    plan = plan_from(
        doc(
            packages=[
                {"registryType": "oci", "identifier": "ghcr.io/x/y:1"},
                pypi(
                    packageArguments=[
                        {"type": "positional", "value": "serve"},
                        {
                            "type": "named",
                            "name": "--root",
                            "value": "/data/{site}",
                            "variables": {"site": {"default": "main"}},
                        },
                        {
                            "type": "named",
                            "name": "--level",
                            "valueHint": "level",
                            "default": "info",
                        },
                        {"type": "named", "name": "--optional"},
                    ]
                ),
            ]
        ),
        {},
    )
    assert (plan.kind, plan.package, plan.version) == ("pypi", "y-server", "1.2.3")
    assert plan.args == ("serve", "--root=/data/main", "--level=info")


def test_secrets_become_references_and_values_are_escaped() -> None:
    plan = plan_from(
        doc(
            packages=[
                pypi(
                    environmentVariables=[
                        {
                            "name": "API_KEY",
                            "isSecret": True,
                            "isRequired": True,
                            "description": "key",
                        },
                        {"name": "OPTIONAL_KEY", "isSecret": True},
                        {"name": "MODE", "description": "mode"},
                    ]
                )
            ]
        ),
        {"MODE": "a${b}"},
    )
    assert dict(plan.env) == {"API_KEY": "${API_KEY}", "MODE": "a$${b}"}
    assert plan.secrets == (("API_KEY", "key", True), ("OPTIONAL_KEY", "no description", False))


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (
            {
                "$schema": "https://static.modelcontextprotocol.io/schemas/2024-01-01/server.schema.json",
                "name": "x",
                "version": "1",
                "packages": [pypi()],
            },
            "unknown server.json schema",
        ),
        (doc(packages=[pypi(version="latest")]), "an exact version is required"),
        (doc(packages=[pypi(registryBaseUrl="https://mirror.example")]), "not the default index"),
        (
            doc(
                packages=[
                    pypi(
                        environmentVariables=[
                            {"name": "R", "isRequired": True, "description": "the region"}
                        ]
                    )
                ]
            ),
            "R is required (the region)",
        ),
        (doc(remotes=[{"type": "sse", "url": "https://x"}]), "remote sse not supported"),
        (
            doc(
                packages=[
                    pypi(packageArguments=[{"type": "named", "name": "--a", "value": "{nope}"}])
                ]
            ),
            "{nope} is not declared",
        ),
    ],
)
def test_refused(document: dict[str, Any], words: str) -> None:
    with pytest.raises(ServerJsonError, match=None) as caught:
        plan_from(document, {})
    assert words in str(caught.value)


def test_registry_response_is_unwrapped_and_inactive_refused() -> None:
    server = doc(remotes=[{"type": "streamable-http", "url": "https://x.example/mcp"}])
    assert unwrap({"server": server, "_meta": {}}) is server
    meta = {"io.modelcontextprotocol.registry/official": {"status": "deleted"}}
    with pytest.raises(ServerJsonError, match="'deleted', not active"):
        unwrap({"server": server, "_meta": meta})
    plan = plan_from(server, {})
    assert (plan.kind, plan.url) == ("remote", "https://x.example/mcp")
