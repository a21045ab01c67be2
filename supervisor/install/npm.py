"""The host's ``node`` and ``npm`` (DESIGN §9): resolve an npm package into a locked tree,
and build a ``node_modules`` from that lock only. Plain subprocesses; npm's cache is its own
(``~/.npm``, or ``npm_config_cache``).

- **Resolve**: a ``package.json`` naming the wanted packages, then ``npm install
  --package-lock-only --ignore-scripts`` in a temp directory; every package of the resulting
  ``package-lock.json`` becomes an :class:`NpmPackage` (its path in the tree, version,
  ``integrity`` hash, and the rest of its lock entry as canonical JSON), which is what
  ``extensions/spctl.lock`` stores.
- **Build**: that ``package.json`` and ``package-lock.json`` written back from the lock, then
  ``npm ci --ignore-scripts`` (npm checks every tarball against its ``integrity``; no install
  script of any package runs).

When the registry cannot be reached, each command is retried once with ``--offline`` (npm's
cache only); when that fails too, the error says the cache cannot satisfy the request. Without
``node`` or ``npm`` on ``PATH`` the error names the missing tool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.install.lockfile import Literal
from supervisor.install.uv import run_child

__all__ = [
    "ROOT_NAME",
    "NpmError",
    "NpmPackage",
    "find_tools",
    "install_locked",
    "package_bins",
    "parse_packages",
    "resolve_locked",
    "split_spec",
    "tool_versions",
]

ROOT_NAME = "spctl-env"  # the name of the package.json spctl writes (never published)
_TOP = ("version", "integrity", "resolved")  # NpmPackage fields: the rest is ``meta``
_PATH = re.compile(r"node_modules/(?:@[a-z0-9][a-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]*")
_INTEGRITY = re.compile(r"sha(256|384|512)-[A-Za-z0-9+/=]+")
_NETWORK_HINTS = (
    "enotfound",
    "eai_again",
    "econnrefused",
    "econnreset",
    "etimedout",
    "enetunreach",
    "ehostunreach",
    "network request to",
    "request to http",
)


class NpmError(Exception):
    """npm (or node) cannot be run or failed; the message says why, in npm's words."""


@dataclass(frozen=True)
class NpmPackage:
    """One package of a locked npm tree, as ``package-lock.json`` (v3) has it."""

    path: str  # "node_modules/@scope/pkg", or nested "node_modules/a/node_modules/b"
    version: str
    integrity: str  # "sha512-…"; "" only for a package bundled inside another's tarball
    resolved: str  # the tarball URL, "" when npm left it out (omit-lockfile-registry-resolved)
    meta: str  # the rest of its lock entry (dependencies, bin, …): canonical JSON

    @property
    def name(self) -> str:
        return self.path.rsplit("node_modules/", 1)[-1]

    def entry(self) -> dict[str, Any]:
        """Its ``package-lock.json`` entry."""
        found: dict[str, Any] = json.loads(self.meta)
        found["version"] = self.version
        if self.resolved:
            found["resolved"] = self.resolved
        if self.integrity:
            found["integrity"] = self.integrity
        return found

    def to_lock(self) -> dict[str, object]:
        table: dict[str, object] = {"path": self.path, "version": self.version}
        table["integrity"] = self.integrity
        if self.resolved:
            table["resolved"] = self.resolved
        table["meta"] = Literal(self.meta)  # '…': no escaped quotes
        return table


def split_spec(spec: str) -> tuple[str, str]:
    """``("@scope/pkg", "1.2.3")`` of ``@scope/pkg@1.2.3``; the version is "" when not given."""
    at = spec.rfind("@")
    if at <= 0:
        return spec, ""
    return spec[:at], spec[at + 1 :]


def find_tools() -> tuple[str, str]:
    """The ``node`` and ``npm`` on ``PATH``; NpmError naming what is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [tool for tool, path in (("node", node), ("npm", npm)) if path is None]
    if node is None or npm is None:
        raise NpmError(
            f"{' and '.join(missing)} not found on PATH ({os.environ.get('PATH', '')}): npm "
            "packages are built with the host's Node.js and npm; install them (Node.js 18 or "
            "newer)"
        )
    return node, npm


def tool_versions() -> tuple[str, str]:
    """``node --version`` (without its ``v``) and ``npm --version``."""
    node, npm = find_tools()
    found = []
    for argv in ([node, "--version"], [npm, "--version"]):
        out = run_child(argv, _environ(), tool=Path(argv[0]).name, error=NpmError, timeout=60)
        if out.returncode != 0:
            raise NpmError(f"{' '.join(argv)} failed: {_tail(out.stderr or out.stdout)}")
        found.append(out.stdout.strip().removeprefix("v"))
    return found[0], found[1]


def _package_json(wanted: Mapping[str, str]) -> str:
    body = {"name": ROOT_NAME, "private": True, "dependencies": dict(sorted(wanted.items()))}
    return json.dumps(body, indent=2) + "\n"


def resolve_locked(wanted: Sequence[str], workdir: Path) -> list[NpmPackage]:
    """Resolve ``wanted`` (``NAME@VERSION``, or ``NAME`` for the newest) into a locked tree."""
    _, npm = find_tools()
    deps = {}
    for spec in wanted:
        name, version = split_spec(spec)
        deps[name] = version or "latest"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "package.json").write_text(_package_json(deps), encoding="utf-8")
    argv = [npm, "install", "--package-lock-only", "--ignore-scripts", *_QUIET]
    argv.append("--omit-lockfile-registry-resolved=false")  # the tarball URLs: no lookups later
    _run(argv, workdir, what="resolving " + ", ".join(wanted))
    try:
        lock = json.loads((workdir / "package-lock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NpmError(f"npm wrote no readable package-lock.json: {exc}") from None
    packages = lock.get("packages") if isinstance(lock, Mapping) else None
    if not isinstance(packages, Mapping):
        raise NpmError("npm's package-lock.json has no packages (lockfileVersion 3 expected)")
    found = parse_packages(
        [{"path": path, **entry} for path, entry in packages.items() if path], "package-lock.json"
    )
    for name in deps:
        if not any(p.path == f"node_modules/{name}" for p in found):
            raise NpmError(f"npm did not resolve {name}")
    return found


def parse_packages(raw: Sequence[Any], where: str) -> list[NpmPackage]:
    """The packages of a lock (``spctl.lock``'s tables, or npm's entries with their ``path``):
    each needs a path inside ``node_modules``, a version and an ``integrity`` hash."""
    found: list[NpmPackage] = []
    for index, item in enumerate(raw):
        at = f"{where}: packages[{index}]"
        if not isinstance(item, Mapping):
            raise NpmError(f"{at}: not a table")
        path, version = item.get("path"), item.get("version")
        if not isinstance(path, str) or not _valid_path(path):
            raise NpmError(f"{at}: path {path!r} is not a path inside node_modules/")
        if not isinstance(version, str) or not version:
            raise NpmError(f"{at} ({path}): no version")
        meta = item.get("meta")
        rest: Any
        if meta is None:  # npm's own entry: the rest of it
            rest = {k: v for k, v in item.items() if k not in (*_TOP, "path")}
        else:
            try:
                rest = json.loads(meta) if isinstance(meta, str) else None
            except ValueError:
                rest = None
            if not isinstance(rest, dict):
                raise NpmError(f"{at} ({path}): meta is not a JSON object")
        if rest.get("link") or any(k in rest for k in _TOP):
            raise NpmError(f"{at} ({path}): a linked package or a duplicated field")
        integrity = item.get("integrity") or ""
        bundled = rest.get("inBundle") is True
        if not isinstance(integrity, str) or not (
            _INTEGRITY.fullmatch(integrity) or (bundled and not integrity)
        ):
            raise NpmError(f"{at} ({path}@{version}): needs an integrity hash (sha256/384/512)")
        resolved = item.get("resolved") or ""
        if not isinstance(resolved, str) or (
            resolved and not resolved.startswith(("https://", "http://"))
        ):
            raise NpmError(f"{at} ({path}): resolved must be an http(s) URL")
        meta_text = json.dumps(rest, sort_keys=True, separators=(",", ":"))
        found.append(NpmPackage(path, version, integrity, resolved, meta_text))
    paths = [p.path for p in found]
    if len(set(paths)) != len(paths):
        raise NpmError(f"{where}: a package path is listed twice")
    return sorted(found, key=lambda p: p.path)


def _valid_path(path: str) -> bool:
    parts = path.split("/node_modules/")
    if not parts[0].startswith("node_modules/"):
        return False
    first = parts[0]
    rest = ["node_modules/" + p for p in parts[1:]]
    return all(_PATH.fullmatch(p) and "/../" not in p for p in [first, *rest])


def install_locked(target: Path, wanted: Sequence[str], packages: Sequence[NpmPackage]) -> None:
    """Write ``package.json`` and ``package-lock.json`` into ``target`` from the lock, then
    ``npm ci --ignore-scripts`` (every tarball checked against its integrity)."""
    _, npm = find_tools()
    deps = dict(split_spec(spec) for spec in wanted)
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text(_package_json(deps), encoding="utf-8")
    tree: dict[str, Any] = {"": {"name": ROOT_NAME, "dependencies": dict(sorted(deps.items()))}}
    tree.update((p.path, p.entry()) for p in packages)
    lock = {"name": ROOT_NAME, "lockfileVersion": 3, "requires": True, "packages": tree}
    (target / "package-lock.json").write_text(json.dumps(lock, indent=2) + "\n", "utf-8")
    argv = [npm, "ci", "--ignore-scripts", *_QUIET]
    _run(argv, target, what=f"installing {len(packages)} locked npm packages")


def package_bins(env: Path, name: str) -> list[str]:
    """The programs (``bin``) the package ``name`` installed in ``env/node_modules`` (sorted)."""
    manifest = env / "node_modules" / name / "package.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NpmError(f"{manifest}: cannot read: {exc}") from None
    bins = data.get("bin") if isinstance(data, Mapping) else None
    if isinstance(bins, str):
        return [name.rsplit("/", 1)[-1]]
    if isinstance(bins, Mapping):
        return sorted(str(k) for k in bins)
    return []


_QUIET = ("--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error")


def _environ() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "npm_config_progress": "false"}


def _run(argv: list[str], cwd: Path, *, what: str) -> None:
    env = _environ()
    first = run_child(argv, env, tool="npm", error=NpmError, cwd=cwd)
    if first.returncode == 0:
        return
    said = _said(first.stderr or first.stdout)
    if not _looks_offline(first.stderr + first.stdout):
        raise NpmError(f"{what}: {said}")
    second = run_child([*argv, "--offline"], env, tool="npm", error=NpmError, cwd=cwd)
    if second.returncode == 0:
        return
    raise NpmError(
        f"{what}: the npm registry cannot be reached ({said}), and npm's cache cannot satisfy "
        f"it offline: {_said(second.stderr or second.stdout)}"
    )


def _said(text: str) -> str:
    """npm's error, without its boilerplate (log file, stack, repeated prefixes)."""
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        for prefix in ("npm error ", "npm ERR! ", "npm warn "):
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
        for word in ("notarget ", "404 "):
            line = line.removeprefix(word).strip()
        if (
            not line
            or line in ("404", "notarget")
            or line.startswith(("A complete log", "at ", "syscall ", "errno ", "In most cases"))
            or line.startswith(("Note that you can also", "tarball, folder", "{", "}"))
            or line in kept
        ):
            continue
        kept.append(line)
    return _tail("\n".join(kept[:4]))


def _looks_offline(text: str) -> bool:
    lowered = text.lower()
    return any(hint in lowered for hint in _NETWORK_HINTS)


def _tail(text: str, lines: int = 6) -> str:
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:]) if kept else "(no output)"
