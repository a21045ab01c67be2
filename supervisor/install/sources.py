"""Where ``spctl add`` gets what it adds (DESIGN §9): a ``server.json`` file, the MCP Registry
(``GET {registry}/v0.1/servers/{name}/versions/latest``), and, once an environment is built,
the console scripts of the package in it. Plain files and ``urllib``: no event loop.
"""

from __future__ import annotations

import configparser
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

__all__ = [
    "DEFAULT_REGISTRY",
    "SourceError",
    "console_scripts",
    "derive_name",
    "fetch_server",
    "read_server_json",
]

DEFAULT_REGISTRY = "https://registry.modelcontextprotocol.io"
_MAX_BYTES = 4 * 1024 * 1024
_TIMEOUT = 30.0


class SourceError(Exception):
    """The source cannot be read; the message names it and the cause."""


def read_server_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return _json(raw, str(path))


def fetch_server(registry: str, name: str, *, timeout: float = _TIMEOUT) -> Any:
    """The registry's latest version of ``name`` (its API response, ``{"server": …}``)."""
    if not registry.startswith(("http://", "https://")):
        raise SourceError(f"--registry {registry!r}: expected an http(s) URL")
    quoted = urllib.parse.quote(name, safe="")
    url = f"{registry.rstrip('/')}/v0.1/servers/{quoted}/versions/latest"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise SourceError(f"{url}: the registry has no server named {name!r}") from None
        raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SourceError(f"{url}: the registry cannot be reached ({reason})") from None
    if len(raw) > _MAX_BYTES:
        raise SourceError(f"{url}: answer larger than {_MAX_BYTES} bytes")
    return _json(raw, url)


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{where}: not valid JSON ({exc})") from None


def console_scripts(env: Path, package: str) -> list[str]:
    """The console scripts the distribution ``package`` installed in ``env`` (sorted)."""
    wanted = canonicalize_name(package)
    for site in sorted((env / "lib").glob("python*/site-packages")):
        for info in site.glob("*.dist-info"):
            dist = info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
            if canonicalize_name(dist) != wanted:
                continue
            points = info / "entry_points.txt"
            if not points.is_file():
                return []
            parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
            parser.optionxform = str  # type: ignore[assignment, method-assign]
            try:
                parser.read_string(points.read_text(encoding="utf-8"))
            except (configparser.Error, OSError, UnicodeDecodeError) as exc:
                raise SourceError(f"{points}: cannot read: {exc}") from None
            if not parser.has_section("console_scripts"):
                return []
            return sorted(parser.options("console_scripts"))
    raise SourceError(f"{package} is not installed in {env}")


_AFFIXES = ("mcp-server-", "server-mcp-", "mcp-", "server-")
_SUFFIXES = ("-mcp-server", "-server-mcp", "-mcp", "-server")


def derive_name(text: str) -> str:
    """An entry name (``[a-z0-9]+(-[a-z0-9]+)*``, ≤ 48) from a package or registry name:
    the part after the last ``/``, lowercased, without an ``mcp-server-`` kind of affix."""
    base = text.rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-")
    for prefix in _AFFIXES:
        if base.startswith(prefix) and len(base) > len(prefix):
            base = base[len(prefix) :]
            break
    for suffix in _SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    return base[:48].strip("-") or "server"
