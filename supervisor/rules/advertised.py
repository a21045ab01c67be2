"""The one conversion of what a worker advertised (a plain dict) into a router ``Catalog``.

The core builds its router from it and so does every MCP face, so both read the same lists
from the same keys (``tools``, ``resources``, ``resourceTemplates``, ``prompts``; anything that
is not a list is an empty list). Pure, and here so the core need not import the faces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor.rules.router import Catalog

__all__ = ["catalog_of"]


def catalog_of(server: str, advertised: Mapping[str, Any]) -> Catalog:
    """A router Catalog from the core's plain dict (``tools``, ``resources``, …).

    Raises ValueError for a server name the router refuses.
    """

    def items(key: str) -> tuple[Mapping[str, Any], ...]:
        value = advertised.get(key)
        return tuple(value) if isinstance(value, list | tuple) else ()

    return Catalog(
        server=server,
        tools=items("tools"),
        resources=items("resources"),
        resource_templates=items("resourceTemplates"),
        prompts=items("prompts"),
    )
