"""``spctl pin`` / ``unpin`` / ``sign``: integrity pins and signatures (DESIGN §10).

They read the registry and write ``spctl.lock`` (``[pins.NAME]``) or the entry's signature
file; they never talk to a running supervisor: it checks the pin and the signature before each
start, so a new pin takes effect at the extension's next start (``spctl restart EXT``).

Exit codes: 0 ok; 1 refused (unknown extension, a pin that does not match, a signing error).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from supervisor.config import Extension

__all__ = ["pin", "sign", "unpin"]

EXIT_REFUSED = 1

ExtensionsOpt = Annotated[
    Path,
    typer.Option(
        "--extensions", "-e", help="The extensions directory (holding servers.yaml and spctl.lock)."
    ),
]
NameArg = Annotated[str, typer.Argument(help="The extension (its name in the registry).")]


def _fail(message: str) -> typer.Exit:
    print(f"spctl: {message}", file=sys.stderr)
    return typer.Exit(EXIT_REFUSED)


def _entry(extensions: Path, name: str) -> tuple[Path, Extension]:
    from supervisor.config import load_registry

    result = load_registry(extensions)
    ext = result.registry.get(name)
    if ext is None:
        for error in result.invalid.get(name, ()):
            print(str(error), file=sys.stderr)
        if name in result.invalid:
            raise _fail(f"{name} has errors in {extensions}/; fix them first")
        fatal = [str(e) for e in result.errors] if result.fatal else []
        for line in fatal:
            print(line, file=sys.stderr)
        raise _fail(f"no extension {name!r} in {extensions}/")
    return result.registry.root, ext


def pin(
    name: NameArg,
    check: Annotated[
        bool,
        typer.Option("--check", help="Compare with the pin instead: exit 1 and list changes."),
    ] = False,
    extensions: ExtensionsOpt = Path("extensions"),
) -> None:
    """Record a SHA-256 digest of an extension's files in spctl.lock (checked before each start)."""
    from supervisor.install import pins
    from supervisor.install.lockfile import LockError, lock_path, read_lock

    root, ext = _entry(extensions, name)
    try:
        if not check:
            tree = pins.pin_extension(ext, root)
            count = len(tree.files)
            print(f"pinned {name}: {tree.digest} ({count} file{'' if count == 1 else 's'})")
            return
        lock = read_lock(root)
        pinned = pins.pinned_table(lock, name, lock_path(root))
        if pinned is None:
            raise _fail(f"{name} is not pinned (pin it: spctl pin {name})")
        now = pins.compute_for(ext, root, lock)
    except (pins.PinError, LockError) as exc:
        raise _fail(str(exc)) from None
    if now.digest == pinned.digest:
        print(f"{name}: matches its pin {pinned.digest}")
        return
    found = pins.changes(pinned, now)
    print(f"{name}: {found.describe(limit=0)}")  # then every name, one a line
    for line in found.names():
        print(f"  {line}")
    raise typer.Exit(EXIT_REFUSED)


def unpin(name: NameArg, extensions: ExtensionsOpt = Path("extensions")) -> None:
    """Remove an extension's pin from spctl.lock."""
    from supervisor.install import pins

    root, ext = _entry(extensions, name)
    try:
        removed = pins.unpin_extension(ext.name, root)
    except pins.PinError as exc:
        raise _fail(str(exc)) from None
    print(f"unpinned {name}" if removed else f"{name} was not pinned")


def sign(
    name: NameArg,
    key: Annotated[
        Path, typer.Option("--key", help="Your OpenSSH private key file (ssh-keygen -Y sign -f).")
    ],
    extensions: ExtensionsOpt = Path("extensions"),
) -> None:
    """Sign an extension's digest with an SSH key into the entry's signature: file."""
    from supervisor.install import pins, signing

    root, ext = _entry(extensions, name)
    if ext.signature is None:
        raise _fail(f"{name} has no signature: field (add signature: and allowedSigners:)")
    from supervisor.install.lockfile import LockError, lock_path, read_lock

    try:
        lock = read_lock(root)
        tree = pins.compute_for(ext, root, lock)
        pinned = pins.pinned_table(lock, name, lock_path(root))
        if pinned is not None and pinned.digest != tree.digest:
            found = pins.changes(pinned, tree).describe()
            raise _fail(f"{name}: {found}; pin it again (spctl pin {name}) before signing")
        signing.sign(tree.digest, key, ext.signature)
    except (pins.PinError, signing.SigningError, LockError, OSError) as exc:
        raise _fail(str(exc)) from None
    shown = ext.signature.relative_to(root) if ext.signature.is_relative_to(root) else ext.signature
    print(f"signed {name}: {tree.digest} -> {shown}")
