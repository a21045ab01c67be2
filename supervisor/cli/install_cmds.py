"""``spctl lock [EXT]`` and ``spctl install [EXT]``: extension environments (DESIGN §9).

``lock`` resolves each named extension's ``install:``/``requirements:`` (all that have one when
no name is given) with uv and writes ``extensions/spctl.lock``; ``install`` builds exactly what
the lock says (hashes required) under the state directory, and never writes the lock. Both
print one line per extension and exit 1 when any failed (the others are still done). They
import the config and ``supervisor.install`` only, lazily: never the core.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from supervisor.config import Extension

__all__ = ["gc", "install", "lock", "upgrade"]

_EXTENSIONS = typer.Option(
    "--extensions",
    "-e",
    help="The extensions directory (holding servers.yaml, modules.yaml and spctl.lock).",
)


def _names(verb: str) -> Any:
    return typer.Argument(
        metavar="[EXT]...",
        help=f"Extensions to {verb} (default: every one with install: or requirements:).",
    )


def lock(
    names: Annotated[list[str] | None, _names("lock")] = None,
    extensions: Annotated[Path, _EXTENSIONS] = Path("extensions"),
) -> None:
    """Resolve extensions' requirements with hashes and write extensions/spctl.lock."""
    from supervisor.install.envlock import lock_extension

    def one(ext: Extension) -> str:
        table = lock_extension(ext, extensions.resolve())
        return f"locked {len(table['packages'])} packages ({table['digest']})"

    _each(_selected(extensions, names), "lock", one)


def install(
    names: Annotated[list[str] | None, _names("build")] = None,
    extensions: Annotated[Path, _EXTENSIONS] = Path("extensions"),
) -> None:
    """Build extensions' environments exactly as extensions/spctl.lock says."""
    from supervisor.control.paths import state_dir
    from supervisor.install.envs import ensure_env

    def one(ext: Extension) -> str:
        progress = _progress(ext.name)
        env = ensure_env(ext, extensions.resolve(), state_dir(), auto_lock=False, progress=progress)
        return str(env.path)

    _each(_selected(extensions, names), "install", one)


def _each(chosen: list[Extension], verb: str, one: Callable[[Extension], str]) -> None:
    """``one`` for each extension: a line each, an error line for each that fails (the others
    are still done), exit 1 when any failed."""
    from supervisor.install.envlock import EnvError

    if not chosen:
        typer.echo(f"nothing to {verb}: no entry has install: or requirements:")
    failed = 0
    for ext in chosen:
        try:
            done = one(ext)
        except EnvError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed += 1
            continue
        typer.echo(f"{ext.name}: {done}")
    raise typer.Exit(1 if failed else 0)


def upgrade(
    name: Annotated[str, typer.Argument(metavar="EXT", help="The extension to re-resolve.")],
    extensions: Annotated[Path, _EXTENSIONS] = Path("extensions"),
) -> None:
    """Re-resolve one extension's requirements (newest allowed versions), re-lock it and build
    its new environment beside the old one."""
    from supervisor.control.paths import state_dir
    from supervisor.install.envlock import EnvError, lock_extension
    from supervisor.install.envs import ensure_env

    (ext,) = _selected(extensions, [name])
    root = extensions.resolve()
    try:
        table = lock_extension(ext, root)
        env = ensure_env(ext, root, state_dir(), auto_lock=False, progress=_progress(ext.name))
    except EnvError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{ext.name}: locked {len(table['packages'])} packages, built {env.path}")
    typer.echo(f"(restart it to switch: spctl restart {ext.name})")


def gc(
    extensions: Annotated[Path, _EXTENSIONS] = Path("extensions"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Only list what would be removed.")
    ] = False,
) -> None:
    """Remove the environments that no entry of extensions/spctl.lock names."""
    from supervisor.control.paths import state_dir
    from supervisor.install.envs import EnvError, remove_env, unused_envs

    try:
        doomed = unused_envs(extensions.resolve(), state_dir())
    except EnvError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    failed = 0
    for path in doomed:
        if not dry_run:
            try:
                remove_env(path)
            except OSError as exc:
                typer.echo(f"error: cannot remove {path}: {exc.strerror or exc}", err=True)
                failed += 1
                continue
        typer.echo(f"{'would remove' if dry_run else 'removed'} {path}")
    if not doomed:
        typer.echo("nothing to remove")
    raise typer.Exit(1 if failed else 0)


def _progress(name: str) -> Callable[[str], None]:
    def say(text: str) -> None:
        typer.echo(f"{name}: {text}", err=True)

    return say


def _selected(extensions: Path, names: list[str] | None) -> list[Extension]:
    from supervisor.config import load_registry

    result = load_registry(extensions)
    if result.fatal or (names and any(name in result.invalid for name in names)):
        for error in result.errors:
            typer.echo(str(error), err=True)
        raise typer.Exit(1)
    registry = result.registry
    if not names:
        return [ext for ext in registry.extensions if ext.environment is not None]
    chosen = []
    for name in names:
        ext = registry.get(name)
        if ext is None:
            typer.echo(f"error: no extension named {name!r} in {extensions}", err=True)
            raise typer.Exit(1)
        if ext.environment is None:
            typer.echo(f"error: {name} has neither install: nor requirements:", err=True)
            raise typer.Exit(1)
        chosen.append(ext)
    return chosen
