"""The worker's Landlock sandbox: what an extension may read, write, connect to and signal.

Standard library only (ctypes syscalls): it runs in the worker before the extension is imported.

Theory of operation. The supervisor sends a policy in the boot spec (``sandbox``: filesystem
``strict``/``off``, the extension's own read-only and read-write paths, ``network``
``none``/``outbound``/``any``, ``required``). :func:`plan` turns it into Landlock rights for
the kernel's ABI — a pure function, so every ABI is testable here — adding what every program
needs (:data:`SYSTEM_READ`, the devices, :data:`SYSTEM_FILES`) and this interpreter's own
prefix, stdlib and ``sys.path`` (:func:`interpreter_paths`). :func:`apply` then sets
``PR_SET_NO_NEW_PRIVS`` and restricts the process: Landlock domains are inherited across
``fork`` and ``execve`` and can never be lifted, so everything the extension starts (stdio
servers and their children) is confined the same way.

Landlock restricts only the calling *thread* (ABI < 8), so :func:`apply` refuses to run in a
process with more than one thread: an unconfined thread could run extension code later.

What Landlock does not cover (said in docs/security.md): UDP and other non-TCP sockets,
``connect()`` to named Unix sockets (the control socket refuses worker peers by pid instead),
path lookup and ``stat`` of files outside the rules, and what was opened before.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FILESYSTEM_MODES",
    "NETWORK_MODES",
    "Plan",
    "Policy",
    "SandboxError",
    "abi_version",
    "apply",
    "interpreter_paths",
    "plan",
]

FILESYSTEM_MODES = ("strict", "off")
NETWORK_MODES = ("none", "outbound", "any")

# Syscall numbers: the same on every architecture (the unified table, Linux 5.13+).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, by the ABI that introduced them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FS_ABI1 = (1 << 13) - 1
_FS_BY_ABI = {1: _FS_ABI1, 2: _FS_ABI1 | REFER, 3: _FS_ABI1 | REFER | TRUNCATE}
_FS_LATEST = _FS_ABI1 | REFER | TRUNCATE | IOCTL_DEV
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # valid on a file rule
BIND_TCP, CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ_EXEC = EXECUTE | READ_FILE | READ_DIR

SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Programs and shared libraries (read and execute)."""

SYSTEM_FILES = (
    *("/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/crypto-policies"),
    *("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/nsswitch.conf", "/etc/gai.conf"),
    *("/etc/services", "/etc/protocols", "/etc/localtime", "/etc/timezone", "/etc/mime.types"),
    *("/etc/passwd", "/etc/group", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"),
    *("/etc/os-release", "/etc/gitconfig", "/sys/devices/system/cpu", "/proc/self", "/proc/sys"),
    *("/proc/meminfo", "/proc/cpuinfo", "/proc/stat", "/proc/loadavg", "/proc/uptime"),
    *("/proc/version", "/proc/filesystems", "/proc/mounts"),
    *("/dev/zero", "/dev/random", "/dev/urandom"),
)
"""The few files every program reads (read-only). Of ``/proc`` only the system-wide files and the
worker's own ``/proc/<pid>``: not another process's (its environ holds its secrets). A process
the extension starts cannot read its own ``/proc/<pid>`` (programs cope: Python and Node do)."""

DEVICES_RW = ("/dev/null", "/dev/full", "/dev/tty")


class SandboxError(Exception):
    """The sandbox cannot be applied as required (the worker reports it as a load error)."""


@dataclass(frozen=True)
class Policy:
    """The boot spec's ``sandbox`` map, validated."""

    filesystem: str = "strict"
    network: str = "outbound"
    readable: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()
    required: bool = False
    private: tuple[str, ...] = ()  # what the interpreter's paths must not open up (see plan)

    @property
    def off(self) -> bool:
        return self.filesystem == "off" and self.network == "any"

    @classmethod
    def parse(cls, raw: object) -> Policy:
        """Validate the wire form (an empty map is the default policy). Raises ValueError."""
        if not isinstance(raw, dict):
            raise ValueError(f"sandbox: expected a map, got {type(raw).__name__}")
        fs, net = raw.get("filesystem", "strict"), raw.get("network", "outbound")
        if fs not in FILESYSTEM_MODES:
            raise ValueError(f"sandbox.filesystem: expected strict or off, got {fs!r}")
        if net not in NETWORK_MODES:
            raise ValueError(f"sandbox.network: expected none, outbound or any, got {net!r}")
        paths = {}
        for key in ("readable", "writable", "private"):
            value = raw.get(key, [])
            if not isinstance(value, list) or not all(
                isinstance(p, str) and p.startswith("/") for p in value
            ):
                raise ValueError(f"sandbox.{key}: expected a list of absolute paths")
            paths[key] = tuple(value)
        required = raw.get("required", False)
        if not isinstance(required, bool):
            raise ValueError("sandbox.required: expected true or false")
        return cls(fs, net, paths["readable"], paths["writable"], required, paths["private"])

    def to_wire(self) -> dict[str, Any]:
        return {
            "filesystem": self.filesystem,
            "network": self.network,
            "readable": list(self.readable),
            "writable": list(self.writable),
            "required": self.required,
            "private": list(self.private),
        }


@dataclass(frozen=True)
class Plan:
    """What to ask the kernel for, and what it cannot give (``missing``)."""

    abi: int
    handled_fs: int = 0
    handled_net: int = 0
    scoped: int = 0
    read: tuple[str, ...] = ()  # read (and execute)
    write: tuple[str, ...] = ()  # every handled right
    missing: tuple[str, ...] = ()
    summary: str = ""

    @property
    def restricts(self) -> bool:
        return bool(self.handled_fs or self.handled_net or self.scoped)


def plan(policy: Policy, abi: int, interpreter: tuple[str, ...] = ()) -> Plan:
    """The Landlock rights for ``policy`` on a kernel of Landlock ``abi`` (0: none).

    ``interpreter`` are this interpreter's paths (:func:`interpreter_paths`), read-only, except
    those that contain one of ``policy.private`` (a source tree on ``sys.path`` that holds the
    registry, say): the extension's own paths come from the supervisor, never from there.
    Pure: no system call; :func:`apply` does them.
    """
    if policy.off:
        return Plan(abi, summary="sandbox off")
    if abi < 1:
        return Plan(abi, missing=("landlock",), summary="not enforced: the kernel has no Landlock")
    missing: list[str] = []
    handled_fs = 0
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    if policy.filesystem == "strict":
        handled_fs = _FS_BY_ABI.get(abi, _FS_LATEST)
        own = tuple(p for p in interpreter if not any(_within(q, p) for q in policy.private))
        read = (*SYSTEM_READ, *SYSTEM_FILES, *own, *policy.readable)
        write = (*DEVICES_RW, *policy.writable)
    handled_net = 0
    if policy.network != "any":
        if abi >= 4:
            handled_net = BIND_TCP | (CONNECT_TCP if policy.network == "none" else 0)
        else:
            missing.append(f"network rules need ABI 4: network {policy.network} not enforced")
    scoped = SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0
    if not scoped:
        missing.append("signal scoping needs ABI 6: signals not scoped")
    parts = [f"landlock ABI {abi}", f"fs {policy.filesystem}"]
    if handled_net or policy.network == "any":
        parts.append(f"network {policy.network}")
    if scoped:
        parts.append("signals scoped")
    summary = ", ".join(parts + missing)
    return Plan(abi, handled_fs, handled_net, scoped, read, write, tuple(missing), summary)


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def interpreter_paths() -> tuple[str, ...]:
    """What this interpreter reads after start: its prefixes, its binary, ``sys.path``, and the
    ``worker`` package itself (wherever it was imported from)."""
    found: list[str] = []
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        found.append(path)
    if sys.executable:
        found.append(sys.executable)
        found.append(os.path.dirname(os.path.realpath(sys.executable)))
    found.extend(p for p in sys.path if p)
    found.append(os.path.dirname(os.path.abspath(__file__)))
    return tuple(dict.fromkeys(os.path.abspath(p) for p in found))


# --- the system calls -------------------------------------------------------------------


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc: Any = None


def _syscall(number: int, *args: Any) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI, 0 when it has none (or it is disabled at boot)."""
    try:
        return _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except OSError:
        return 0


def apply(policy: Policy, abi_cap: int | None = None) -> str:
    """Confine this process (and all it will start) to ``policy``; returns the summary that
    ``spctl status`` shows. Raises SandboxError when ``policy.required`` and the kernel cannot
    enforce all of it, or when Landlock refuses.

    ``abi_cap`` uses at most that ABI, as on an older kernel (Landlock is backward compatible):
    how the tests see what a weaker kernel enforces."""
    abi = abi_version() if abi_cap is None else min(abi_cap, abi_version())
    p = plan(policy, abi, interpreter_paths() if policy.filesystem == "strict" else ())
    if p.missing and policy.required:
        raise SandboxError(f"sandbox required but {p.summary}")
    if not p.restricts:
        return p.summary
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # an unconfined thread could run extension code later
        raise SandboxError(f"sandbox: the worker has {threads} threads, Landlock confines one")
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    attr = _RulesetAttr(p.handled_fs, p.handled_net, p.scoped)
    try:
        ruleset = _syscall(
            _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
        )
    except OSError as e:
        raise SandboxError(f"sandbox: landlock_create_ruleset failed: {e.strerror}") from None
    try:
        if p.handled_fs:
            for path in p.read:
                _allow(ruleset, path, READ_EXEC & p.handled_fs, p.handled_fs)
            for path in p.write:
                _allow(ruleset, path, p.handled_fs, p.handled_fs)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SandboxError(
                f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
            )
        try:
            _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
        except OSError as e:
            raise SandboxError(f"sandbox: landlock_restrict_self failed: {e.strerror}") from None
    finally:
        os.close(ruleset)
    return p.summary


def _allow(ruleset: int, path: str, access: int, handled: int) -> None:
    """Add a path-beneath rule; a path that does not exist is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= FILE_RIGHTS
            if path.startswith("/dev/"):
                access |= IOCTL_DEV & handled
        attr = _PathBeneathAttr(access & handled, fd)
        try:
            _syscall(
                _SYS_ADD_RULE, ctypes.c_int(ruleset), _RULE_PATH_BENEATH, ctypes.byref(attr), 0
            )
        except OSError as e:
            raise SandboxError(f"sandbox: cannot add a rule for {path}: {e.strerror}") from None
    finally:
        os.close(fd)
