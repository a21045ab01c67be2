"""The extension registry: ``extensions/servers.yaml`` and ``modules.yaml`` → frozen dataclasses.

Pure: reading the two files and stat-ing paths is all the I/O it does; it never imports or runs
extension code. ``load_registry`` never raises for bad input; see ``LoadResult``.
"""

from __future__ import annotations

from supervisor.config.errors import ConfigError
from supervisor.config.load import MAX_FILE_BYTES
from supervisor.config.registry import load_registry
from supervisor.config.schema import (
    Auth,
    Extension,
    Filter,
    GlobSource,
    Limits,
    LoadResult,
    Registry,
    RestartConfig,
    Source,
)
from supervisor.config.values import (
    ExpansionError,
    FrozenDict,
    Secret,
    expand,
    parse_cpu,
    parse_duration,
    parse_size,
    thaw,
)

__all__ = [
    "MAX_FILE_BYTES",
    "Auth",
    "ConfigError",
    "ExpansionError",
    "Extension",
    "Filter",
    "FrozenDict",
    "GlobSource",
    "Limits",
    "LoadResult",
    "Registry",
    "RestartConfig",
    "Secret",
    "Source",
    "expand",
    "load_registry",
    "parse_cpu",
    "parse_duration",
    "parse_size",
    "thaw",
]
