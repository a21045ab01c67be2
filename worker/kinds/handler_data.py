"""A handler's data made MCP: the shorthand results it may return, and its catalog.

:func:`normalise` turns what ``create_handler``'s callable returns into the MCP result;
:func:`fetch_catalog` calls its four list methods (following ``nextCursor``; an unsupported
one — raising or returning None — is an empty list) and keeps only well-formed, unique items
as plain JSON data (msgpack-able, and comparable to the catalog sent last).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from worker import api
from worker.log import say
from worker.mcp.publish import Catalog


class Handler(Protocol):
    """What the catalog fetch needs of a handler (:class:`worker.kinds.handler.Handler`)."""

    @property
    def capabilities(self) -> list[str]: ...

    async def call(self, method: str, params: dict[str, Any]) -> Any: ...


__all__ = ["LISTS", "MAX_PAGES", "fetch_catalog", "normalise", "text_block"]

MAX_PAGES = 1000
# capability → (list method, catalog key, the key naming an item)
LISTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "tools": (("tools/list", "tools", "name"),),
    "resources": (
        ("resources/list", "resources", "uri"),
        ("resources/templates/list", "resourceTemplates", "uriTemplate"),
    ),
    "prompts": (("prompts/list", "prompts", "name"),),
}


# -- results --------------------------------------------------------------------------------


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _json(value: Any) -> str | None:
    """JSON text (odd values as their str()); None if JSON cannot hold it (tuple keys, cycles)."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return None


def normalise(method: str, params: Mapping[str, Any], result: Any) -> Any:
    """Shorthands a handler may return, turned into the MCP result (anything else as is).

    ``tools/call``: str → one text block; dict without ``content`` → its JSON as text plus
    ``structuredContent``; a list of content blocks → ``content``; None → no content; any other
    value → its JSON as text. ``resources/read``: str → one text resource for ``params.uri``.
    ``prompts/get``: str → one user message. None for any other method → ``{}``.
    """
    if method == "tools/call":
        if isinstance(result, str):
            return {"content": [text_block(result)]}
        if isinstance(result, dict):
            if "content" in result:
                return result
            text = _json(result)
            if text is None:
                return {"content": [text_block(str(result))]}
            return {"content": [text_block(text)], "structuredContent": json.loads(text)}
        if result is None:
            return {"content": []}
        if isinstance(result, list) and all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in result
        ):
            return {"content": result}
        return {"content": [text_block(_json(result) or str(result))]}
    if method == "resources/read" and isinstance(result, str):
        return {"contents": [{"uri": params.get("uri", ""), "text": result}]}
    if method == "prompts/get" and isinstance(result, str):
        return {"messages": [{"role": "user", "content": text_block(result)}]}
    return {} if result is None else result


# -- the catalog ----------------------------------------------------------------------------


def _items(batch: Any, id_key: str, method: str) -> list[dict[str, Any]]:
    if not isinstance(batch, list):
        say(f"{method}: expected a list, got {type(batch).__name__}; ignored")
        return []
    out = []
    for item in batch:
        if not isinstance(item, dict) or not isinstance(item.get(id_key), str):
            say(f"{method}: dropped an item without a string {id_key!r}: {item!r:.100}")
            continue
        if method == "tools/list" and "inputSchema" not in item:
            item = {**item, "inputSchema": {"type": "object"}}
        out.append(item)
    return out


async def _fetch_list(handler: Handler, method: str, key: str, id_key: str) -> list[Any]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        try:
            page = await handler.call(method, params)
        except api.McpError as e:
            if params or e.code != api.METHOD_NOT_FOUND:
                say(f"{method} raised {e}; keeping {len(items)} items")
            break
        except Exception as e:
            say(f"{method} raised {type(e).__name__}: {e}; keeping {len(items)} items")
            break
        cursor = None
        if isinstance(page, dict):
            items += _items(page.get(key, []), id_key, method)
            cursor = page.get("nextCursor")
        elif page is not None:
            items += _items(page, id_key, method)  # a bare list: one page
        if not isinstance(cursor, str) or not cursor:
            break
        if cursor in seen:
            say(f"{method}: nextCursor {cursor!r} repeats; stopping there")
            break
        seen.add(cursor)
        params = {"cursor": cursor}
    names: set[str] = set()
    unique = []
    for item in items:
        if item[id_key] in names:
            say(f"{method}: duplicate {id_key} {item[id_key]!r}; the first one is kept")
        else:
            names.add(item[id_key])
            unique.append(item)
    # Plain JSON data from here on: msgpack-able, and comparable to the last catalog sent.
    text = _json(unique)
    if text is None:
        say(f"{method}: the list is not JSON data; ignored")
        return []
    clean: list[Any] = json.loads(text)
    return clean


async def fetch_catalog(handler: Handler) -> Catalog:
    """The four MCP lists, for the capabilities the metadata names (all four if it names none
    of tools/resources/prompts). Never raises for the handler's errors: a failing list is empty."""
    wanted = [c for c in LISTS if c in handler.capabilities] or list(LISTS)
    catalog: Catalog = {"tools": [], "resources": [], "resourceTemplates": [], "prompts": []}
    for capability in wanted:
        for method, key, id_key in LISTS[capability]:
            catalog[key] = await _fetch_list(handler, method, key, id_key)
    return catalog
