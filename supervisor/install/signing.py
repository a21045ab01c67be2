"""OpenSSH signatures of an extension's pin digest (DESIGN §10), through ``ssh-keygen -Y``.

The signed message is the digest text (``sha256:<hex>`` and a newline) in the namespace
``spctl-extension``, the mechanism git uses for signed commits. spctl keeps no keys: ``sign``
uses the operator's private key file, ``verify`` an ``allowed_signers`` file (format: ssh-keygen(1),
"ALLOWED SIGNERS").
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from supervisor.atomic import write_atomic

__all__ = ["NAMESPACE", "SigningError", "message", "sign", "verify"]

NAMESPACE = "spctl-extension"
_TIMEOUT = 30.0


class SigningError(Exception):
    """Signing or verification failed; the message says why (never a key's content)."""


def message(digest: str) -> bytes:
    return (digest + "\n").encode()


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise SigningError("ssh-keygen not found on PATH (install OpenSSH 8.2 or later)")
    return found


def _run(argv: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            argv, input=data, capture_output=True, timeout=_TIMEOUT, check=False, env=_env()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SigningError(f"ssh-keygen: {exc}") from None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SSH_ASKPASS", None)
    env["SSH_ASKPASS_REQUIRE"] = "never"  # never prompt from inside the supervisor
    return env


def _said(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = (proc.stderr or proc.stdout).decode(errors="replace").strip()
    return text.splitlines()[-1] if text else f"exit status {proc.returncode}"


def sign(digest: str, key: Path, out: Path) -> None:
    """Sign ``digest`` with the private ``key`` into ``out`` (temp file + rename)."""
    if not key.is_file():
        raise SigningError(f"{key}: no such key file")
    proc = _run([_ssh_keygen(), "-Y", "sign", "-n", NAMESPACE, "-f", str(key)], message(digest))
    if proc.returncode != 0 or b"BEGIN SSH SIGNATURE" not in proc.stdout:
        raise SigningError(f"cannot sign with {key}: {_said(proc)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, proc.stdout, mode=0o644)


def verify(digest: str, signature: Path, allowed_signers: Path) -> str:
    """The principal whose key in ``allowed_signers`` made ``signature`` of ``digest``;
    SigningError (with the reason) when there is none."""
    if not signature.is_file():
        raise SigningError(f"signature {signature.name} not found (sign it: spctl sign)")
    if not allowed_signers.is_file():
        raise SigningError(f"allowedSigners {allowed_signers.name} not found")
    tool = _ssh_keygen()
    sig, allowed = str(signature), str(allowed_signers)
    found = _run([tool, "-Y", "find-principals", "-s", sig, "-f", allowed], b"")
    principals = [p for p in found.stdout.decode(errors="replace").split() if p]
    if found.returncode != 0 or not principals:
        said = (found.stderr or b"").decode(errors="replace")
        if "parse" in said or "armor" in said:
            raise SigningError(f"signature {signature.name} is not an SSH signature")
        if "No principal matched" in said:
            raise SigningError(
                f"signature {signature.name} is not by a key in {allowed_signers.name}"
            )
        raise SigningError(f"signature {signature.name} cannot be checked: {_said(found)}")
    problem = ""
    for principal in principals:
        argv = [tool, "-Y", "verify", "-n", NAMESPACE, "-f", allowed, "-I", principal, "-s", sig]
        proc = _run(argv, message(digest))
        if proc.returncode == 0:
            return principal
        problem = _said(proc)
    raise SigningError(
        f"signature {signature.name} does not verify (the files changed since signed?): {problem}"
    )
