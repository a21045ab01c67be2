"""Notes: an MCP server extension that keeps notes in SQLite, offline.

Tools: ``add_note`` {title, body, tags?}, ``search_notes`` {query?, tag?, limit?},
``get_note`` {id}, ``delete_note`` {id}. Each note is also a resource ``notes://<id>``.
The database is ``notes.db`` in the extension's state directory (``$EXTENSION_STATE_DIR``,
set by spctl), or ``config.database``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.api import INVALID_PARAMS, METHOD_NOT_FOUND, RESOURCE_NOT_FOUND, McpError

metadata = {
    "name": "notes",
    "version": "1.0.0",
    "description": "Notes kept in SQLite: add, search, read, delete",
    "capabilities": ["tools", "resources"],
}

_S = {"type": "string"}
TOOLS = [
    {
        "name": "add_note",
        "description": "Save a note; returns its id.",
        "inputSchema": {
            "type": "object",
            "properties": {"title": _S, "body": _S, "tags": {"type": "array", "items": _S}},
            "required": ["title", "body"],
        },
    },
    {
        "name": "search_notes",
        "description": "Find notes whose title or body contains the query (newest first).",
        "inputSchema": {
            "type": "object",
            "properties": {"query": _S, "tag": _S, "limit": {"type": "integer", "minimum": 1}},
        },
    },
    {
        "name": "get_note",
        "description": "Read one note by id.",
        "inputSchema": {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"],
        },
    },
    {
        "name": "delete_note",
        "description": "Delete one note by id.",
        "inputSchema": {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"],
        },
    },
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
"""


class Notes:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()  # sync tools run in worker threads

    def add(self, title: str, body: str, tags: list[str]) -> int:
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO notes (title, body, tags, created) VALUES (?, ?, ?, ?)",
                (title, body, ",".join(tags), time.time()),
            )
            return int(cur.lastrowid or 0)

    def search(self, query: str, tag: str | None, limit: int) -> list[dict[str, Any]]:
        sql = "SELECT id, title, body, tags, created FROM notes WHERE (title LIKE ? OR body LIKE ?)"
        args: list[Any] = [f"%{query}%", f"%{query}%"]
        if tag:
            sql += " AND (',' || tags || ',') LIKE ?"
            args.append(f"%,{tag},%")
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_row(r) for r in rows]

    def get(self, note_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, title, body, tags, created FROM notes WHERE id = ?", (note_id,)
            ).fetchone()
        return _row(row) if row else None

    def delete(self, note_id: int) -> bool:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM notes WHERE id = ?", (note_id,)).rowcount > 0

    def close(self) -> None:
        self._db.close()


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": r[0],
        "title": r[1],
        "body": r[2],
        "tags": [t for t in r[3].split(",") if t],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r[4])),
    }


def _text(note: dict[str, Any]) -> str:
    tags = f" [{', '.join(note['tags'])}]" if note["tags"] else ""
    return f"#{note['id']} {note['title']}{tags} ({note['created']})\n{note['body']}"


def _int(args: dict[str, Any], key: str) -> int:
    value = args.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise McpError(INVALID_PARAMS, f"{key} must be an integer")
    return value


def create_handler(config: dict[str, Any]) -> Callable[[str, dict[str, Any]], Any]:
    state = Path(os.environ.get("EXTENSION_STATE_DIR", Path(__file__).parent / ".state"))
    notes = Notes(Path(config.get("database") or state / "notes.db"))

    def call_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
        if name == "add_note":
            title, body = args.get("title"), args.get("body")
            if not isinstance(title, str) or not isinstance(body, str) or not title:
                raise McpError(INVALID_PARAMS, "title and body must be non-empty strings")
            tags = [str(t) for t in args.get("tags") or []]
            note_id = notes.add(title, body, tags)
            return {
                "content": [{"type": "text", "text": f"saved note #{note_id}"}],
                "structuredContent": {"id": note_id},
            }
        if name == "search_notes":
            found = notes.search(
                str(args.get("query", "")), args.get("tag"), int(args.get("limit", 20))
            )
            text = "\n\n".join(_text(n) for n in found) or "no notes found"
            return {
                "content": [{"type": "text", "text": text}],
                "structuredContent": {"notes": found},
            }
        if name == "get_note":
            note = notes.get(_int(args, "id"))
            if note is None:
                return {
                    "content": [{"type": "text", "text": f"no note #{args['id']}"}],
                    "isError": True,
                }
            return {"content": [{"type": "text", "text": _text(note)}], "structuredContent": note}
        if name == "delete_note":
            ok = notes.delete(_int(args, "id"))
            return {
                "content": [
                    {"type": "text", "text": "deleted" if ok else f"no note #{args['id']}"}
                ],
                "isError": not ok,
            }
        raise McpError(INVALID_PARAMS, f"Unknown tool: {name}")

    def handle(method: str, params: dict[str, Any]) -> Any:
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            return call_tool(params.get("name", ""), params.get("arguments") or {})
        if method == "resources/list":
            return {
                "resources": [
                    {"uri": f"notes://{n['id']}", "name": n["title"], "mimeType": "text/plain"}
                    for n in notes.search("", None, 100)
                ]
            }
        if method == "resources/read":
            uri = str(params.get("uri", ""))
            note = (
                notes.get(int(uri[len("notes://") :]))
                if uri.startswith("notes://") and uri[8:].isdigit()
                else None
            )
            if note is None:
                raise McpError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}")
            return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": _text(note)}]}
        raise McpError(METHOD_NOT_FOUND, f"Method not found: {method}")

    return handle
