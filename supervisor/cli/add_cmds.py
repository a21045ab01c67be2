"""``spctl add SOURCE`` and ``spctl remove EXT`` (DESIGN §9): the seed's marketplace.

``add`` maps the source (``pypi:NAME[==V]``, ``npm:NAME[@V]``, a ``server.json``,
``registry:NAME``) to an entry, resolves and builds its environment, shows the argv it will
run, asks, then writes
``servers.yaml`` (a ruamel.yaml round-trip: comments and layout kept) and ``spctl.lock`` —
only after the environment is built and the whole registry with the new entry validates — and
reloads a running supervisor. On any failure nothing is written, and an environment it built
for nothing is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

if TYPE_CHECKING:
    from supervisor.install.envlock import Env

__all__ = ["add", "remove"]

EXIT_REFUSED = 1
_EXTENSIONS = typer.Option(
    "--extensions", "-e", help="The extensions directory (holding servers.yaml and spctl.lock)."
)
_YES = typer.Option("--yes", "-y", help="Do not ask (for scripts).")
_SOCKET = typer.Option(
    "--socket", help="Control socket (default: $SPCTL_SOCKET or the run directory)."
)


_NPM_NAME = re.compile(r"(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*")
_NPM_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:[-+][A-Za-z0-9.+-]+)?")


class Refused(Exception):
    """``spctl add``/``remove`` cannot go on; the message says why."""


@dataclass
class Draft:
    """The entry ``add`` will write, and what it needs."""

    name: str
    provenance: str
    kind: str  # pypi | npm | remote
    package: str = ""
    version: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    secrets: list[tuple[str, str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    registry_name: str = ""  # a server.json's name (provenance); else the package's


def add(
    source: Annotated[
        str,
        typer.Argument(
            help="pypi:NAME[==VERSION], npm:NAME[@VERSION], a server.json path, or registry:NAME."
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help="The entry's name.")] = None,
    extensions: Annotated[Path, _EXTENSIONS] = Path("extensions"),
    yes: Annotated[bool, _YES] = False,
    command: Annotated[
        str | None,
        typer.Option("--command", help="The console script to run (when there are several)."),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option("--registry", help="The MCP Registry (default: the official one)."),
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="NAME=VALUE for a server.json input.")
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="NAME=VALUE for a server.json argument.")
    ] = None,
    sock: Annotated[Path | None, _SOCKET] = None,
) -> None:
    """Add a published MCP server: build and lock its environment, write its entry, reload."""
    try:
        _add(source, name, extensions, yes, command, registry, env or [], arg or [], sock)
    except Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        typer.echo("nothing was changed", err=True)
        raise typer.Exit(EXIT_REFUSED) from None


def _add(
    source: str,
    name: str | None,
    extensions: Path,
    yes: bool,
    command: str | None,
    registry: str | None,
    env: list[str],
    arg: list[str],
    sock: Path | None,
) -> None:
    from supervisor.atomic import write_atomic
    from supervisor.control.paths import state_dir
    from supervisor.install.envlock import SECTION, EnvError
    from supervisor.install.lockfile import LockError, read_lock, update_lock
    from supervisor.install.origins import ORIGIN_SECTION, origin_table

    if not yes and not sys.stdin.isatty():
        raise Refused("stdin is not a terminal and --yes was not given: refusing to write")
    root = extensions.resolve()
    servers_file = root / "servers.yaml"
    if not root.is_dir():
        raise Refused(f"{extensions}: extensions directory not found")
    old_text = _read(servers_file)
    values = _values(env, "--env") | _values(arg, "--arg")
    draft = _draft(source, values, registry, ask=not yes)
    for variable, _, _ in draft.secrets:
        if variable in values:
            raise Refused(
                f"{variable} is a secret: spctl add writes ${{{variable}}}, never a literal; "
                f"export {variable} instead of giving it with --env/--arg"
            )
    entry_name = name or _derived(draft)
    _check_name(entry_name, root, old_text)
    draft.name = entry_name
    missing = [(v, d) for v, d, required in draft.secrets if required and v not in os.environ]
    if missing:
        raise Refused(
            "; ".join(f"{v} is required ({d}): export {v}=… and run again" for v, d in missing)
            + " (spctl add writes ${VAR}, never its value)"
        )
    for note in draft.notes:
        typer.echo(f"note: {note}", err=True)

    table: dict[str, Any] | None = None
    built: Env | None = None
    fresh = False
    entry: dict[str, Any]
    try:
        if draft.kind in ("pypi", "npm"):
            table, built, fresh = _build(draft, state_dir())
            program = _command(draft, built, command, yes)
            entry = {
                "name": entry_name,
                "type": "local",
                "install": table["source"],
                "command": [program, *draft.args],
            }
            if draft.env:
                entry["env"] = dict(draft.env)
        else:
            entry = {"name": entry_name, "type": "remote", "url": draft.url}
            if draft.headers:
                entry["headers"] = dict(draft.headers)
        new_text = _with_entry(old_text, entry, draft.provenance)
        ext = _validated(root, old_text, new_text, entry_name)
        argv = _argv(ext, built, table)
        _show(entry_name, argv, draft, servers_file)
        if not yes and not typer.confirm(f"write {entry_name} to {servers_file}?", default=False):
            raise Refused("not confirmed")
        origin = origin_table(
            source, draft.registry_name or draft.package, draft.version or "", now=None
        )
        writes: dict[str, Any] = {ORIGIN_SECTION: origin}
        if table is not None:
            writes[SECTION] = table
        previous: dict[str, Any] = {}
        try:
            lock = read_lock(root)
            for section, value in writes.items():
                previous[section] = lock.get(section, {}).get(entry_name)
                update_lock(root, section, entry_name, value)
        except (LockError, OSError) as exc:
            _restore(root, entry_name, previous)
            raise Refused(f"cannot write the lock: {exc}") from None
        try:
            mode = servers_file.stat().st_mode & 0o777 if servers_file.exists() else 0o644
            write_atomic(servers_file, new_text.encode(), mode=mode)
        except OSError as exc:
            _restore(root, entry_name, previous)
            raise Refused(f"cannot write {servers_file}: {exc.strerror or exc}") from None
    except EnvError as exc:
        _forget(built, fresh)
        raise Refused(str(exc)) from None
    except BaseException:  # a refusal, Ctrl-C: the env built for nothing goes too
        _forget(built, fresh)
        raise
    typer.echo(f"{entry_name}: added to {servers_file}")
    _must_set(draft)
    _reload(sock, entry_name)


def _restore(root: Path, name: str, previous: dict[str, Any]) -> None:
    """Put back the lock tables ``add`` replaced (best effort: it is failing already)."""
    from supervisor.install.lockfile import LockError, update_lock

    for section, value in previous.items():
        with contextlib.suppress(LockError, OSError):
            update_lock(root, section, name, value)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _values(pairs: list[str], flag: str) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Refused(f"{flag} {pair!r}: expected NAME=VALUE")
        found[key] = value
    return found


def _draft(source: str, values: dict[str, str], registry: str | None, ask: bool = False) -> Draft:
    """What ``source`` adds. With ``ask`` (a terminal, no --yes), a required server.json input
    that has no value is asked for, and the document mapped again with the answer."""
    from packaging.utils import canonicalize_name

    from supervisor.install.sources import (
        DEFAULT_REGISTRY,
        SourceError,
        fetch_server,
        read_server_json,
    )
    from supervisor.rules.server_json import MissingInput, ServerJsonError, plan_from, unwrap

    if source.startswith("npm:"):
        from supervisor.install.npm import split_spec

        package, version = split_spec(source[len("npm:") :].strip())
        if not _NPM_NAME.fullmatch(package) or source.endswith("@"):
            raise Refused(f"{source}: expected npm:NAME or npm:NAME@VERSION (an exact version)")
        if version and not _NPM_VERSION.fullmatch(version):
            raise Refused(
                f"{source}: {version!r} is not an exact version (1.2.3); leave it out for the "
                "newest"
            )
        return Draft("", source, "npm", package, version or None)
    if source.startswith("pypi:"):
        spec = source[len("pypi:") :].strip()
        package, sep, version = spec.partition("==")
        if not package or (sep and not version) or any(c in package for c in "<>=!~ ;[@"):
            raise Refused(f"{source}: expected pypi:NAME or pypi:NAME==VERSION")
        canonical = str(canonicalize_name(package))
        return Draft("", source, "pypi", canonical, version or None)
    try:
        if source.startswith("registry:"):
            server_name = source[len("registry:") :]
            doc = fetch_server(registry or DEFAULT_REGISTRY, server_name)
            where = f"{registry or DEFAULT_REGISTRY} {server_name}"
        elif source.endswith(".json") or Path(source).is_file():
            doc = read_server_json(Path(source))
            where = source
        else:
            raise Refused(
                f"{source!r}: expected pypi:NAME[==VERSION], registry:NAME or a server.json path"
            )
        while True:
            try:
                plan = plan_from(unwrap(doc), values)
                break
            except MissingInput as missing:
                if not ask or missing.key in values:
                    raise
                values[missing.key] = typer.prompt(f"{missing.key} ({missing.description})")
    except (SourceError, ServerJsonError) as exc:
        raise Refused(f"{where if 'where' in locals() else source}: {exc}") from None
    provenance = f"{plan.registry_name} {plan.version} (from {source})"
    package = plan.package
    if plan.kind == "pypi" and package:
        package = str(canonicalize_name(package))
    return Draft(
        name="",
        provenance=provenance,
        kind=plan.kind if plan.kind in ("pypi", "npm") else "remote",
        package=package,
        version=plan.version if plan.kind in ("pypi", "npm") else None,
        args=plan.args,
        env=dict(plan.env),
        url=plan.url,
        headers=dict(plan.headers),
        secrets=list(plan.secrets),
        notes=list(plan.notes),
        registry_name=plan.registry_name,
    )


def _derived(draft: Draft) -> str:
    from supervisor.install.sources import derive_name

    text = draft.package or draft.provenance.split(" ", 1)[0]
    return derive_name(text)


def _check_name(name: str, root: Path, text: str) -> None:
    from supervisor.config.entries import NAME_MAX, NAME_PATTERN
    from supervisor.config.load import parse_text
    from supervisor.install.servers_yaml import EditError, entry_names

    if len(name) > NAME_MAX or not NAME_PATTERN.fullmatch(name):
        raise Refused(
            f"--name {name!r}: an entry name is lowercase letters, digits and single dashes, "
            f"at most {NAME_MAX} characters"
        )
    try:
        taken = entry_names(text) if text else []
    except EditError as exc:
        raise Refused(str(exc)) from None
    modules = root / "modules.yaml"
    if modules.is_file():
        data = parse_text(modules.read_text(encoding="utf-8", errors="replace")).data
        items = data.get("modules") if isinstance(data, dict) else None
        taken += [str(i.get("name")) for i in items or () if isinstance(i, dict)]
    if name in taken:
        raise Refused(
            f"the name {name!r} is already taken by an entry of {root.name}/; choose another "
            "with --name"
        )


def _build(draft: Draft, state: Path) -> tuple[dict[str, Any], Env, bool]:
    """Resolve the draft's package (pinning the newest version when none was given) and build
    its environment; the lock table (written nowhere yet), the env, and whether it is new."""
    from packaging.utils import canonicalize_name

    from supervisor.install.envlock import Env, env_dir, host_python, resolve_table
    from supervisor.install.envs import build_env
    from supervisor.install.uv import LockedPackage

    if draft.kind == "npm":
        return _build_npm(draft, state)
    say = _progress(draft.name)
    wanted = draft.package + (f"=={draft.version}" if draft.version else "")
    table = resolve_table(draft.name, [wanted], f"pypi:{wanted}", progress=say)
    if draft.version is None:  # pin the version uv chose
        mine = [p for p in table["packages"] if canonicalize_name(p["name"]) == draft.package]
        if not mine:
            raise Refused(f"uv did not resolve {draft.package}")
        draft.version = mine[0]["version"]
        say(f"latest version: {draft.package}=={draft.version}")
    table["source"] = f"pypi:{draft.package}=={draft.version}"
    table["requirements"] = [f"{draft.package}=={draft.version}"]
    packages = tuple(
        LockedPackage(p["name"], p["version"], tuple(p["hashes"])) for p in table["packages"]
    )
    env = Env(
        draft.name,
        table["digest"],
        host_python(),
        packages,
        env_dir(state, draft.name, table["digest"]),
    )
    fresh = not env.path.exists()
    if not env.complete:
        build_env(env, progress=say)
    return table, env, fresh


def _build_npm(draft: Draft, state: Path) -> tuple[dict[str, Any], Env, bool]:
    from supervisor.install.envlock import Env, EnvError, env_dir, resolve_npm_table
    from supervisor.install.envs import build_env
    from supervisor.install.npm import NpmError, parse_packages

    say = _progress(draft.name)
    wanted = draft.package + (f"@{draft.version}" if draft.version else "")
    table = resolve_npm_table(draft.name, [wanted], f"npm:{wanted}", progress=say)
    exact = table["requirements"][0]
    if draft.version is None:
        draft.version = exact.rsplit("@", 1)[1]
        say(f"latest version: {exact}")
    table["source"] = f"npm:{exact}"
    try:
        packages = tuple(parse_packages(table["packages"], "npm"))
    except NpmError as exc:  # pragma: no cover - resolve_npm_table parsed them
        raise EnvError(f"{draft.name}: {exc}") from None
    env = Env(
        draft.name,
        table["digest"],
        "",
        (),
        env_dir(state, draft.name, table["digest"]),
        "npm",
        packages,
        (exact,),
    )
    fresh = not env.path.exists()
    if not env.complete:
        build_env(env, progress=say)
    return table, env, fresh


def _scripts(draft: Draft, env: Env) -> list[str]:
    from supervisor.install.npm import NpmError, package_bins
    from supervisor.install.sources import SourceError, console_scripts

    try:
        if draft.kind == "npm":
            return package_bins(env.path, draft.package)
        return console_scripts(env.path, draft.package)
    except (SourceError, NpmError) as exc:
        raise Refused(str(exc)) from None


def _command(draft: Draft, env: Env, command: str | None, yes: bool) -> str:
    scripts = _scripts(draft, env)
    where = "node_modules/.bin/" if draft.kind == "npm" else "bin/"
    if command is not None:
        if "/" in command or not (env.bin / command).exists():
            raise Refused(
                f"--command {command!r} is not in the environment's {where} "
                f"({draft.package} installs: {', '.join(scripts) or 'no console script'})"
            )
        return command
    if len(scripts) == 1:
        return scripts[0]
    what = f"{draft.package} {draft.version}"
    if not scripts:
        raise Refused(
            f"{what} installs no console script: it is not a runnable server (give --command "
            "NAME of a program in its environment if it has one)"
        )
    if yes or not sys.stdin.isatty():
        raise Refused(
            f"{what} installs several console scripts ({', '.join(scripts)}): "
            "choose one with --command"
        )
    for number, script in enumerate(scripts, 1):
        typer.echo(f"  {number}. {script}")
    choice = typer.prompt(
        f"{what} installs several console scripts: which one runs the server?",
        type=click.IntRange(1, len(scripts)),
    )
    return scripts[int(choice) - 1]


def _with_entry(text: str, entry: dict[str, Any], provenance: str) -> str:
    from supervisor.install.servers_yaml import EditError, add_entry

    try:
        return add_entry(text, entry, f"added by spctl add: {provenance}")
    except EditError as exc:
        raise Refused(str(exc)) from None


def _validated(root: Path, old_text: str, new_text: str, name: str) -> Any:
    from supervisor.config import load_registry

    old = load_registry(root).errors
    before = {(e.file.name, e.field, e.message) for e in old}  # lines may move: not compared
    after = load_registry(root, texts={"servers": new_text})
    new_errors = [str(e) for e in after.errors if (e.file.name, e.field, e.message) not in before]
    ext = after.registry.get(name)
    if new_errors or ext is None:
        detail = "; ".join(new_errors) or f"{name} is not in the registry it would write"
        raise Refused(f"the registry with the new entry does not validate: {detail}")
    for error in old:
        typer.echo(f"warning (already there): {error}", err=True)
    return ext


def _argv(ext: Any, env: Env | None, table: dict[str, Any] | None) -> list[str]:
    from supervisor.install.envlock import EnvError, requirements_of
    from supervisor.install.envs import with_env

    if env is None or table is None:
        return [f"(remote) {ext.url}"]
    if requirements_of(ext) != table["requirements"]:
        raise EnvError(f"{ext.name}: the entry does not match what was locked")
    hosted = with_env(ext, env)
    return list(hosted.command or ())


def _show(name: str, argv: list[str], draft: Draft, servers_file: Path) -> None:
    typer.echo(f"{name}: will run: {' '.join(argv)}")
    for key, value in sorted(draft.env.items()):
        typer.echo(f"  env {key}={value}")
    for key, value in sorted(draft.headers.items()):
        typer.echo(f"  header {key}: {value}")


def _must_set(draft: Draft) -> None:
    needed = [(v, d) for v, d, required in draft.secrets if required]
    optional = [(v, d) for v, d, required in draft.secrets if not required and v not in os.environ]
    for variable, description in needed:
        typer.echo(f"set {variable} in the supervisor's environment ({description})")
    for variable, description in optional:
        typer.echo(f"optional, left out: {variable} ({description}); add it to env: to use it")


def _reload(sock: Path | None, name: str) -> None:
    from supervisor.control.client import ControlClient, NotRunning, RpcError
    from supervisor.control.paths import client_socket_path

    try:
        with ControlClient(sock or client_socket_path(), timeout=600.0) as client:
            result = client.call("reload", False)
    except NotRunning:
        typer.echo("no supervisor is running: it will be picked up at the next start")
        return
    except (RpcError, TimeoutError, OSError) as exc:
        typer.echo(f"warning: the running supervisor did not reload: {exc}", err=True)
        return
    errors = result.get("errors") if isinstance(result, dict) else None
    for error in errors or ():
        typer.echo(f"warning: reload: {error}", err=True)
    typer.echo(f"reloaded the running supervisor ({name})")


def _forget(env: Env | None, fresh: bool) -> None:
    if env is not None and fresh and env.path.exists():
        from supervisor.install.envs import remove_env

        with contextlib.suppress(OSError):
            remove_env(env.path)


def _progress(name: str) -> Any:
    def say(text: str) -> None:
        typer.echo(f"{name}: {text}", err=True)

    return say


def remove(
    name: Annotated[str, typer.Argument(metavar="EXT", help="The entry to take out.")],
    extensions: Annotated[Path, _EXTENSIONS] = Path("extensions"),
    yes: Annotated[bool, _YES] = False,
    sock: Annotated[Path | None, _SOCKET] = None,
) -> None:
    """Take an entry out of servers.yaml (comments of the others kept), and its lock entry;
    its environment is left to `spctl gc`."""
    from supervisor.atomic import write_atomic
    from supervisor.install.envlock import SECTION
    from supervisor.install.lockfile import LockError, read_lock, update_lock
    from supervisor.install.origins import ORIGIN_SECTION
    from supervisor.install.servers_yaml import EditError, remove_entry

    root = extensions.resolve()
    servers_file = root / "servers.yaml"
    try:
        if not yes and not sys.stdin.isatty():
            raise Refused("stdin is not a terminal and --yes was not given: refusing to write")
        old_text = _read(servers_file)
        try:
            new_text = remove_entry(old_text, name)
        except EditError as exc:
            raise Refused(str(exc)) from None
        if not yes and not typer.confirm(f"remove {name} from {servers_file}?", default=False):
            raise Refused("not confirmed")
        try:
            lock = read_lock(root)
        except LockError as exc:
            raise Refused(str(exc)) from None
        previous = lock.get(SECTION, {}).get(name)
        origin = lock.get(ORIGIN_SECTION, {}).get(name)
        mode = servers_file.stat().st_mode & 0o777
        try:
            write_atomic(servers_file, new_text.encode(), mode=mode)
        except OSError as exc:
            raise Refused(f"cannot write {servers_file}: {exc.strerror or exc}") from None
    except Refused as exc:
        typer.echo(f"error: {exc}", err=True)
        typer.echo("nothing was changed", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    typer.echo(f"{name}: removed from {servers_file}")
    try:
        if origin is not None:
            update_lock(root, ORIGIN_SECTION, name, None)
        if previous is not None:
            update_lock(root, SECTION, name, None)
            typer.echo(f"{name}: lock entry removed; its environment is left to `spctl gc`")
    except (LockError, OSError) as exc:
        typer.echo(f"warning: cannot remove its lock entry: {exc}", err=True)
    _reload(sock, name)
