"""``spctl enable``/``disable`` overrides, kept in the state directory.

Why not edit the user's YAML: the registry may be read-only (``ProtectSystem=strict``, a config
management tool, a git checkout), and a round-trip editor would be one more dependency for one
boolean. So the YAML stays the user's, the override lives in ``overrides.json`` next to the
control socket's state, survives restarts and reloads, and ``status``/``validate`` show the
effective value and where it comes from. ``spctl enable`` of an extension that the YAML already
enables removes the override rather than recording a redundant one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from supervisor.atomic import write_atomic
from supervisor.config import Extension

__all__ = ["FILE_NAME", "Overrides"]

FILE_NAME = "overrides.json"


class Overrides:
    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        self.enabled: dict[str, bool] = {}
        self.error: str | None = None
        self.load()

    def load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as exc:
            self.error = f"{self.path}: ignored, unreadable ({exc})"
            raw = {}
        enabled = raw.get("enabled", {}) if isinstance(raw, dict) else {}
        self.enabled = (
            {str(k): bool(v) for k, v in enabled.items() if isinstance(v, bool)}
            if isinstance(enabled, dict)
            else {}
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"enabled": self.enabled}, indent=2, sort_keys=True) + "\n"
        write_atomic(self.path, text.encode(), fsync=False)  # a crash never leaves half a file

    def set(self, ext: Extension, enabled: bool, yaml_enabled: bool) -> None:
        if enabled == yaml_enabled:
            self.enabled.pop(ext.name, None)
        else:
            self.enabled[ext.name] = enabled
        self.save()

    def apply(self, extensions: Iterable[Extension]) -> list[Extension]:
        return [
            dataclasses.replace(e, enabled=self.enabled[e.name]) if e.name in self.enabled else e
            for e in extensions
        ]

    def source(self, name: str, section: str) -> str:
        return f"override ({self.path})" if name in self.enabled else f"{section}.yaml"
