"""The validated registry as frozen dataclasses (what the rest of spctl consumes).

Everything here is immutable and hashable: mappings are ``FrozenDict``s and lists are tuples,
so two loads of the same text compare equal and a reload can diff extensions with ``==``.
``Extension.source`` (where the entry was written) is left out of equality: moving an entry
or adding a comment above it is not a change worth restarting it for. ``config`` and ``env``
are left out of ``repr`` because they may carry secrets expanded from ``${VAR}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.config.errors import ConfigError
from supervisor.config.values import FrozenDict, Secret

__all__ = [
    "AUTH_TYPES",
    "EXTENSION_TYPES",
    "FRONT_SECTION",
    "HOOK_EVENTS",
    "INSTALL_KINDS",
    "MODULE_TYPES",
    "OAUTH_GRANTS",
    "RESTART_POLICIES",
    "SANDBOX_FILESYSTEM",
    "SANDBOX_NETWORK",
    "SECTIONS",
    "TOKEN_AUTH_METHODS",
    "TOKEN_FILE",
    "Auth",
    "EnvSpec",
    "Extension",
    "Filter",
    "GlobSource",
    "Hooks",
    "Limits",
    "LoadResult",
    "Registry",
    "RestartConfig",
    "RunAs",
    "Sandbox",
    "Source",
]

SECTIONS = ("servers", "modules")  # what the registry files may hold
FRONT_SECTION = "front"  # not in SECTIONS: no file can declare the front
EXTENSION_TYPES = ("local", "remote")
MODULE_TYPES = ("daemon", "plugin")
AUTH_TYPES = ("bearer", "apikey", "oauth2")
OAUTH_GRANTS = ("client_credentials", "authorization_code")
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
TOKEN_FILE = "oauth-tokens.json"
"""``grant: authorization_code``: the user's tokens, in ``<state dir>/extensions/<name>/``."""
RESTART_POLICIES = ("always", "on-failure", "never")
SANDBOX_FILESYSTEM = ("strict", "off")
SANDBOX_NETWORK = ("none", "outbound", "any")

_EMPTY: FrozenDict[Any, Any] = FrozenDict()


@dataclass(frozen=True)
class Source:
    """Where an entry starts (1-based)."""

    file: Path
    line: int
    column: int


@dataclass(frozen=True)
class Limits:
    """Resource limits of one worker; None means no limit."""

    memory: int | None = None  # bytes
    cpu: float | None = None  # cores (0.5 = half of one core)
    cpu_time: float | None = None  # seconds of CPU time
    open_files: int | None = None
    processes: int | None = None


@dataclass(frozen=True)
class RestartConfig:
    """``restart:`` of an entry: how it is restarted (the one restart-settings type:
    ``rules/policy.py`` reads it too). Durations are seconds. The last three have no YAML key.

    Raises:
        ValueError: an unknown policy or a value out of range (the loader reports those as
            config errors before it builds one).
    """

    policy: str = "on-failure"  # always | on-failure | never
    max_restarts: int = 5  # within `window`, then the extension is failed
    window: float = 60.0
    backoff: float = 1.0  # first delay after consecutive crashes, doubled each time
    max_backoff: float = 30.0
    jitter: float = 0.2  # each delay × a factor uniform in [1-jitter, 1+jitter]
    reset_after: float = 60.0  # a run at least this long ends a streak of crashes
    load_error_tries: int = 2  # load errors in a row before it is failed

    def __post_init__(self) -> None:
        if self.policy not in RESTART_POLICIES:
            raise ValueError(
                f"restart policy must be one of {sorted(RESTART_POLICIES)}: {self.policy!r}"
            )
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.window <= 0:
            raise ValueError(f"window must be > 0, got {self.window}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.reset_after < 0:
            raise ValueError(f"reset_after must be >= 0, got {self.reset_after}")
        if self.load_error_tries < 1:
            raise ValueError(f"load_error_tries must be >= 1, got {self.load_error_tries}")


HOOK_EVENTS = ("onCrash", "onFailed", "onRecovered")


@dataclass(frozen=True)
class Hooks:
    """``hooks:``: a command (argv, never a shell) per event, run with the event as JSON on
    stdin; ``timeout``: seconds before it is killed (None: the core's default, 10 s). An
    entry's own events replace its file's (the top-level ``hooks:``), event by event."""

    commands: Mapping[str, tuple[str, ...]] = _EMPTY
    timeout: float | None = None


@dataclass(frozen=True)
class Sandbox:
    """``sandbox:`` of an entry (DESIGN §11): what its worker may reach, enforced by Landlock.

    ``filesystem: strict`` allows the system's programs and libraries, the interpreter, the
    extension's own directory and installation (read-only), its state dir (read-write) and
    ``readable``/``writable``; ``network`` is TCP: ``none``, ``outbound`` (connect, no bind) or
    ``any``; ``required`` refuses to start where the kernel cannot enforce all of it.
    """

    filesystem: str = "strict"
    network: str = "outbound"
    readable: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    required: bool = False

    @property
    def off(self) -> bool:
        return self.filesystem == "off" and self.network == "any"


@dataclass(frozen=True)
class GlobSource:
    """Where one glob of a filter was written (for ``spctl validate``'s warnings)."""

    field: str  # servers[0].tools.allow[1]
    line: int
    column: int
    glob: str


@dataclass(frozen=True)
class Filter:
    """``tools:``, ``prompts:`` or ``resources:`` of a server entry: which of the server's own
    names (resources: URIs) are advertised and may be called. ``allow`` None allows all; a
    name must match an ``allow`` glob (when given) and no ``deny`` glob: deny wins. Globs are
    ``fnmatch``-style, case-sensitive (``supervisor.rules.filters`` matches them).
    ``sources`` is where each glob was written; it is not part of equality."""

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    sources: tuple[GlobSource, ...] = field(default=(), compare=False, repr=False)

    @property
    def everything(self) -> bool:
        """True when the filter lets every name through (the default)."""
        return self.allow is None and not self.deny


@dataclass(frozen=True)
class RunAs:
    """``user:``/``group:``: the ids the worker switches to before importing the extension.

    Resolved when the registry is loaded (names through the user and group databases);
    ``user`` is the value as written, for messages.
    """

    user: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Auth:
    """How a remote extension authenticates; only the fields of its ``type`` are set."""

    type: str  # bearer | apikey | oauth2
    token: Secret | None = None
    key: Secret | None = None
    header: str | None = None  # apikey: the header that carries the key (default X-API-Key)
    client_id: str | Secret | None = None  # a Secret when it came from ${VAR}
    client_secret: Secret | None = None
    token_url: str | None = None
    scopes: tuple[str, ...] = ()
    token_auth_method: str | None = None  # client_secret_basic | client_secret_post
    grant: str = "client_credentials"  # or authorization_code (spctl auth login)
    resource: str | None = None  # RFC 8707: None → the server's URL; "" → send none


INSTALL_KINDS = ("pypi", "npm", "file")  # install: pypi:NAME==V, npm:NAME@V, ./dist/x.whl


@dataclass(frozen=True)
class EnvSpec:
    """``install:`` and/or ``requirements:`` of an entry (DESIGN §9): what its own environment
    is built from. ``requirements`` are PEP 508 strings (from the list, or read from the file
    ``requirements_file`` at load time); ``install`` is the source token as written."""

    install: str | None = None  # "pypi:mcp-server-time==2026.10.19"
    install_kind: str | None = None  # one of INSTALL_KINDS
    package: str | None = None  # pypi: the requirement "NAME==V"; npm: "NAME@V"; file: the path
    requirements: tuple[str, ...] = ()
    requirements_file: Path | None = None


@dataclass(frozen=True)
class Extension:
    """One validated entry of servers.yaml or modules.yaml."""

    name: str
    section: str  # "servers" | "modules"
    type: str  # "local" | "remote"
    source: Source = field(compare=False)
    enabled: bool = True
    path: Path | None = None  # resolved, absolute, inside the extensions directory
    url: str | None = None
    auth: Auth | None = None
    headers: Mapping[str, str | Secret] = _EMPTY  # values from ${VAR} are Secrets
    config: Mapping[str, Any] = field(default=_EMPTY, repr=False)  # frozen; see values.thaw
    module_type: str | None = None  # "daemon" | "plugin" (modules only)
    provides: tuple[str, ...] = ()
    limits: Limits = Limits()
    restart: RestartConfig = RestartConfig()
    timeout: float = 30.0
    stop_timeout: float = 10.0
    start_timeout: float = 30.0
    lazy: bool = False
    idle_timeout: float | None = None  # lazy servers: stopped after this long without calls
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default=_EMPTY, repr=False)
    python: Path | None = None  # absolute, symlinks kept (a venv's python is a symlink)
    run_as: RunAs | None = None  # user:/group:; None = the supervisor's own user
    depends_on: tuple[str, ...] = ()
    sandbox: Sandbox = Sandbox()
    pass_env: tuple[str, ...] = ()  # passEnv: names of the supervisor's variables passed on
    tools: Filter = Filter()  # servers only: what of the server is advertised and callable
    prompts: Filter = Filter()
    resources: Filter = Filter()  # by URI (resource templates: by their uriTemplate)
    signature: Path | None = None  # an OpenSSH signature of the pin digest (DESIGN §10)
    allowed_signers: Path | None = None  # whose keys may make it (ssh-keygen ALLOWED SIGNERS)
    hooks: Hooks = Hooks()  # commands run on onCrash/onFailed/onRecovered
    environment: EnvSpec | None = None  # install:/requirements: (DESIGN §9)

    @property
    def kind(self) -> str:
        """``"server"`` or ``"module"``; ``"front"`` only for the MCP front's synthetic entry
        (section ``FRONT_SECTION``, built by ``supervisor.core.front``, never loaded)."""
        if self.section == FRONT_SECTION:
            return "front"
        return "server" if self.section == "servers" else "module"


@dataclass(frozen=True)
class Registry:
    """The valid extensions, servers first, each in file order."""

    root: Path
    extensions: tuple[Extension, ...] = ()

    def get(self, name: str) -> Extension | None:
        return next((ext for ext in self.extensions if ext.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(ext.name for ext in self.extensions)

    @property
    def servers(self) -> tuple[Extension, ...]:
        return tuple(ext for ext in self.extensions if ext.section == "servers")

    @property
    def modules(self) -> tuple[Extension, ...]:
        return tuple(ext for ext in self.extensions if ext.section == "modules")


@dataclass(frozen=True)
class LoadResult:
    """What ``load_registry`` found: the valid extensions and every error.

    ``invalid`` maps each named entry that has errors to those errors; such an extension is not
    in ``registry``, and ``serve`` shows it as failed while the others start. An error that
    cannot be pinned on one named entry (an unreadable or unparseable file, a wrong top-level
    shape, a missing directory, an entry without a usable or unique name) makes the result
    ``fatal``: ``serve`` refuses to start and ``reload`` changes nothing.
    """

    registry: Registry
    errors: tuple[ConfigError, ...] = ()
    invalid: Mapping[str, tuple[ConfigError, ...]] = _EMPTY

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def fatal(self) -> bool:
        return any(error.extension is None for error in self.errors)
