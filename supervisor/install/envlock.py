"""The lock side of an extension's environment (DESIGN §9): what to resolve, the
``[extensions.NAME]`` table of ``extensions/spctl.lock``, and its checks. Building is
:mod:`supervisor.install.envs`.

- **Lock**: the entry's requirements (``install: pypi:…`` and/or ``requirements:``) plus
  ``msgpack`` (the worker's one dependency, at the host's version) are resolved with hashes by
  ``uv pip compile`` and written to ``extensions/spctl.lock`` ``[extensions.NAME]``: ``source``,
  ``requirements`` (the entry's own), ``python`` (``X.Y`` of the interpreter spctl runs on),
  ``digest`` (sha256 of the python version and the locked package list) and ``packages``.
- **npm** (``install: npm:NAME@VERSION``): resolved by the host's npm
  (:mod:`supervisor.install.npm`) into ``source``, ``requirements`` (``["NAME@VERSION"]``),
  ``node``/``npm`` (the versions that resolved it: informative, not checked), ``digest`` (sha256
  of the requirements and the locked tree) and ``packages`` (path, version, ``integrity``, the
  rest of npm's lock entry as JSON).
- **Match**: an entry whose requirements differ from its lock entry is refused with a message
  that says what differs and to run ``spctl lock NAME``. An entry with no lock entry at all is
  locked on its first build (``auto_lock``); ``serve`` does that, ``spctl install`` does not.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from supervisor.config import Extension
from supervisor.install.lockfile import LockError, read_lock, update_lock
from supervisor.install.npm import (
    NpmError,
    NpmPackage,
    parse_packages,
    resolve_locked,
    split_spec,
    tool_versions,
)
from supervisor.install.uv import LockedPackage, UvError, compile_locked

__all__ = [
    "COMPLETE",
    "SECTION",
    "Archive",
    "Env",
    "EnvError",
    "LockReader",
    "Progress",
    "archive_of",
    "digest_of",
    "env_dir",
    "host_python",
    "is_npm",
    "lock_extension",
    "locked_env",
    "needs_env",
    "npm_digest_of",
    "requirements_of",
    "resolve_npm_table",
    "resolve_table",
]

SECTION = "extensions"
COMPLETE = ".spctl-complete"
Progress = Callable[[str], None]
LockReader = Callable[[Path], Mapping[str, Any]]


class EnvError(Exception):
    """The environment of one extension cannot be locked or built; the message says why."""


@dataclass(frozen=True)
class Env:
    """A built (or to be built) environment, as its lock entry describes it."""

    name: str
    digest: str  # "sha256:…"
    python_version: str
    packages: tuple[LockedPackage, ...]
    path: Path
    kind: str = "pypi"  # "pypi" (a venv) | "npm" (a node_modules)
    npm_packages: tuple[NpmPackage, ...] = ()
    requirements: tuple[str, ...] = ()  # npm: what package.json asks for

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        """Where ``command:``'s first word is looked up."""
        if self.kind == "npm":
            return self.path / "node_modules" / ".bin"
        return self.path / "bin"

    @property
    def size(self) -> int:
        """How many packages it holds."""
        return len(self.npm_packages) if self.kind == "npm" else len(self.packages)

    @property
    def complete(self) -> bool:
        return (self.path / COMPLETE).is_file()


def needs_env(ext: Extension) -> bool:
    return ext.environment is not None


def host_python() -> str:
    """``X.Y`` of the interpreter spctl runs on (the envs are built on it)."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def requirements_of(ext: Extension) -> list[str]:
    """What the entry itself asks for, in order (what the lock records as ``requirements``)."""
    spec = ext.environment
    if spec is None:
        raise EnvError(f"{ext.name}: has neither install: nor requirements:")
    if spec.install_kind == "npm":
        assert spec.package is not None
        if spec.requirements:
            raise EnvError(
                f"{ext.name}: install: {spec.install} cannot be combined with requirements: "
                "(those are Python packages)"
            )
        return [spec.package]
    if spec.install_kind == "file":
        assert spec.install is not None
        return [spec.install, *spec.requirements]
    found = [spec.package] if spec.package else []
    return [*found, *spec.requirements]


def digest_of(
    python_version: str, packages: tuple[LockedPackage, ...] | list[LockedPackage]
) -> str:
    body = json.dumps(
        {
            "python": python_version,
            "packages": [
                [p.name, p.version, sorted(p.hashes), *([p.file] if p.file else [])]
                for p in packages
            ],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def npm_digest_of(
    requirements: list[str] | tuple[str, ...], packages: tuple[NpmPackage, ...] | list[NpmPackage]
) -> str:
    body = json.dumps(
        {
            "npm": list(requirements),
            "packages": [[p.path, p.version, p.integrity, p.resolved, p.meta] for p in packages],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def env_dir(state_dir: Path, name: str, digest: str) -> Path:
    return state_dir / "envs" / f"{name}-{digest.removeprefix('sha256:')[:12]}"


def lock_extension(
    ext: Extension, extensions_dir: Path, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Resolve the entry's requirements and write ``[extensions.NAME]``; returns the table."""
    source = ext.environment.install if ext.environment and ext.environment.install else ""
    wanted = requirements_of(ext)
    if is_npm(ext):
        table = resolve_npm_table(ext.name, wanted, source, progress=progress)
    else:
        archive = archive_of(ext, extensions_dir)
        table = resolve_table(ext.name, wanted, source, progress=progress, archive=archive)
    try:
        update_lock(extensions_dir, SECTION, ext.name, table)
    except (LockError, OSError) as exc:
        raise EnvError(f"{ext.name}: cannot write the lock: {exc}") from None
    return table


@dataclass(frozen=True)
class Archive:
    """``install: ./dist/x.whl``: the wheel/sdist inside the extensions directory."""

    written: str  # as the entry has it: "./dist/x.whl"
    relative: str  # to the extensions directory, as the lock has it: "dist/x.whl"
    path: Path  # absolute
    name: str  # the distribution, from the file name
    version: str

    def sha256(self) -> str:
        h = hashlib.sha256()
        with self.path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return "sha256:" + h.hexdigest()


def archive_of(ext: Extension, extensions_dir: Path) -> Archive | None:
    """The local archive ``ext`` installs, or None (validated by the config: inside
    ``extensions_dir``; its name must be a wheel's or an sdist's)."""
    spec = ext.environment
    if spec is None or spec.install_kind != "file" or spec.install is None:
        return None
    assert spec.package is not None
    path = Path(spec.package)
    try:
        relative = path.relative_to(extensions_dir.resolve()).as_posix()
    except ValueError:
        raise EnvError(
            f"{ext.name}: install: {spec.install} is not inside {extensions_dir}"
        ) from None
    try:
        if path.name.endswith(".whl"):
            dist, version, _, _ = parse_wheel_filename(path.name)
        else:
            dist, version = parse_sdist_filename(
                path.name[: -len(".tgz")] + ".tar.gz" if path.name.endswith(".tgz") else path.name
            )
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise EnvError(
            f"{ext.name}: install: {spec.install}: not a wheel or sdist file name ({exc})"
        ) from None
    return Archive(spec.install, relative, path, str(dist), str(version))


def resolve_table(
    name: str,
    wanted: list[str],
    source: str,
    *,
    progress: Progress | None = None,
    archive: Archive | None = None,
) -> dict[str, Any]:
    """The ``[extensions.NAME]`` table for ``wanted`` (resolved with uv), written nowhere.
    ``archive``: the local wheel/sdist among ``wanted``, locked by its file's sha256."""
    python_version = host_python()
    say = progress or (lambda _: None)
    say(f"resolving {', '.join(wanted)} for Python {python_version}")
    uv_wanted = [
        f"{archive.name} @ {archive.path.as_uri()}" if archive and w == archive.written else w
        for w in wanted
    ]
    with tempfile.TemporaryDirectory(prefix="spctl-lock-") as work:
        try:
            packages = compile_locked(
                [*uv_wanted, _msgpack_requirement()], python_version, Path(work)
            )
        except UvError as exc:
            raise EnvError(f"{name}: cannot lock: {exc}") from None
    if archive is not None:
        try:
            hashes = (archive.sha256(),)
        except OSError as exc:
            raise EnvError(f"{name}: cannot read {archive.written}: {exc}") from None
        if sum(1 for p in packages if p.file) != 1:
            raise EnvError(f"{name}: cannot lock: uv did not resolve {archive.written} as a file")
        mine = LockedPackage(archive.name, archive.version, hashes, archive.relative)
        packages = [mine if p.file else p for p in packages]
    table: dict[str, Any] = {
        "source": source,
        "requirements": wanted,
        "python": python_version,
        "digest": digest_of(python_version, packages),
        "packages": [p.to_lock() for p in packages],
    }
    say(f"locked {len(packages)} packages ({table['digest'][:19]}…)")
    return table


def resolve_npm_table(
    name: str, wanted: list[str], source: str, *, progress: Progress | None = None
) -> dict[str, Any]:
    """The ``[extensions.NAME]`` table of an npm package (resolved with npm), written nowhere.
    ``wanted`` without a version (``NAME``) resolves the newest and pins it."""
    say = progress or (lambda _: None)
    say(f"resolving {', '.join(wanted)} with npm")
    try:
        node, npm = tool_versions()
        with tempfile.TemporaryDirectory(prefix="spctl-lock-") as work:
            packages = resolve_locked(wanted, Path(work))
    except NpmError as exc:
        raise EnvError(f"{name}: cannot lock {source or ', '.join(wanted)}: {exc}") from None
    exact = []
    for spec in wanted:
        package = split_spec(spec)[0]
        (top,) = (p for p in packages if p.path == f"node_modules/{package}")
        exact.append(f"{package}@{top.version}")
    table: dict[str, Any] = {
        "source": source,
        "requirements": exact,
        "node": node,
        "npm": npm,
        "digest": npm_digest_of(exact, packages),
        "packages": [p.to_lock() for p in packages],
    }
    say(f"locked {len(packages)} npm packages ({table['digest'][:19]}…)")
    return table


def is_npm(ext: Extension) -> bool:
    return ext.environment is not None and ext.environment.install_kind == "npm"


def _msgpack_requirement() -> str:
    try:
        return f"msgpack=={metadata.version('msgpack')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - spctl depends on it
        return "msgpack"


def locked_env(
    ext: Extension, extensions_dir: Path, state_dir: Path, *, read: LockReader = read_lock
) -> Env | None:
    """The env the lock says ``ext`` runs in; None when the lock has no entry for it. A lock
    entry that does not match the entry, or is not consistent in itself, raises ``EnvError``.
    ``read``: how the lock is read (the core's reads it again only when it changed)."""
    where = f"{extensions_dir / 'spctl.lock'} [extensions.{ext.name}]"
    try:
        table = read(extensions_dir).get(SECTION, {}).get(ext.name)
    except LockError as exc:
        raise EnvError(f"{ext.name}: {exc}") from None
    if table is None:
        return None
    fix = f"run `spctl lock {ext.name}`"
    if not isinstance(table, Mapping):
        raise EnvError(f"{where}: not a table; {fix}")
    wanted = requirements_of(ext)
    if table.get("requirements") != wanted:
        raise EnvError(
            f"{where}: locked for requirements {table.get('requirements')!r}, the entry asks for "
            f"{wanted!r}; {fix}"
        )
    if is_npm(ext):
        return _npm_env(ext, table, state_dir, where, fix)
    if table.get("python") != host_python():
        raise EnvError(
            f"{where}: locked for Python {table.get('python')!r}, spctl runs on "
            f"{host_python()}; {fix}"
        )
    packages = _packages(table.get("packages"), where, fix)
    packages = _check_archive(ext, extensions_dir, packages, where, fix)
    names = {p.name for p in packages}
    if "msgpack" not in names:
        raise EnvError(f"{where}: has no msgpack (the worker needs it); {fix}")
    digest = table.get("digest")
    if digest != digest_of(host_python(), packages):
        raise EnvError(
            f"{where}: digest {digest!r} does not match its packages (edited by hand?); {fix}"
        )
    root = extensions_dir.resolve()
    built = tuple(replace(p, file=str(root / p.file)) if p.file else p for p in packages)
    return Env(ext.name, digest, host_python(), built, env_dir(state_dir, ext.name, digest))


def _check_archive(
    ext: Extension,
    extensions_dir: Path,
    packages: tuple[LockedPackage, ...],
    where: str,
    fix: str,
) -> tuple[LockedPackage, ...]:
    """The lock's local archive is the entry's own, and the file is still what was locked."""
    archive = archive_of(ext, extensions_dir)
    files = [p for p in packages if p.file]
    expected = [archive.relative] if archive else []
    if [p.file for p in files] != expected:
        raise EnvError(
            f"{where}: locks the files {[p.file for p in files]!r}, the entry installs "
            f"{expected!r}; {fix}"
        )
    if archive is not None:
        try:
            now = archive.sha256()
        except OSError as exc:
            raise EnvError(f"{ext.name}: cannot read {archive.written}: {exc}") from None
        if now not in files[0].hashes:
            raise EnvError(
                f"{where}: {archive.written} has changed since it was locked (it is {now}, the "
                f"lock has {', '.join(files[0].hashes)}); {fix}"
            )
    return packages


def _npm_env(
    ext: Extension, table: Mapping[str, Any], state_dir: Path, where: str, fix: str
) -> Env:
    raw = table.get("packages")
    if not isinstance(raw, list) or not raw:
        raise EnvError(f"{where}: packages must be a non-empty list of tables; {fix}")
    try:
        packages = tuple(parse_packages(raw, where))
    except NpmError as exc:
        raise EnvError(f"{exc}; {fix}") from None
    wanted = requirements_of(ext)
    digest = table.get("digest")
    if not isinstance(digest, str) or digest != npm_digest_of(wanted, packages):
        raise EnvError(
            f"{where}: digest {digest!r} does not match its packages (edited by hand?); {fix}"
        )
    for spec in wanted:
        name, version = split_spec(spec)
        top = [p for p in packages if p.path == f"node_modules/{name}"]
        if not top or top[0].version != version:
            raise EnvError(f"{where}: packages do not hold {spec}; {fix}")
    path = env_dir(state_dir, ext.name, digest)
    return Env(ext.name, digest, "", (), path, "npm", packages, tuple(wanted))


def _packages(raw: object, where: str, fix: str) -> tuple[LockedPackage, ...]:
    if not isinstance(raw, list) or not raw:
        raise EnvError(f"{where}: packages must be a non-empty list of tables; {fix}")
    found = []
    for index, item in enumerate(raw):
        ok = isinstance(item, Mapping) and isinstance(item.get("name"), str)
        ok = ok and isinstance(item.get("version"), str) and isinstance(item.get("hashes"), list)
        hashes = item.get("hashes") if ok and isinstance(item, Mapping) else None
        if (
            not ok
            or not hashes
            or not all(isinstance(h, str) and h.startswith("sha256:") for h in hashes)
        ):
            raise EnvError(
                f"{where}: packages[{index}] needs name, version and sha256 hashes; {fix}"
            )
        assert isinstance(item, Mapping)
        file = item.get("file", "")
        if not isinstance(file, str):
            raise EnvError(f"{where}: packages[{index}].file must be a path; {fix}")
        found.append(LockedPackage(item["name"], item["version"], tuple(hashes), file))
    return tuple(found)
