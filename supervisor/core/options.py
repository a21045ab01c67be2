"""What ``spctl serve`` is told on its command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from supervisor.core.audit import AuditOptions
from supervisor.core.front import FrontOptions
from supervisor.rules.health import HealthSettings

__all__ = ["ServeOptions"]


@dataclass
class ServeOptions:
    extensions: Path
    socket: Path
    health: HealthSettings = field(default_factory=HealthSettings)
    cgroups: bool = True  # False: rlimits + watchdog only (--no-cgroups, SPCTL_CGROUPS=off)
    front: FrontOptions | None = field(default_factory=FrontOptions)  # None: no MCP front
    watch: bool = False  # reload when servers.yaml / modules.yaml change (--watch)
    audit: AuditOptions | None = None  # the audit log (None: --no-audit)
