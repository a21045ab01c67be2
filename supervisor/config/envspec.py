"""``install:`` and ``requirements:`` of an entry (DESIGN §9): what its own environment is
built from, checked without touching the network.

- ``install: pypi:NAME==VERSION`` (an exact version), ``npm:NAME@VERSION`` or a path to a
  wheel/sdist/tarball inside the extensions directory: a published server. It needs
  ``command:`` (type local, servers only), whose first word is then found in the env's ``bin/``.
- ``requirements: [PEP 508, …]`` or ``requirements: ./x/requirements.txt`` (inside the
  extensions directory; one requirement a line, ``#`` comments): the worker runs in a venv with
  those packages.

Each kind is locked and built by ``supervisor.install.envlock`` / ``envs`` (npm: with the
host's npm; a local archive: with uv, locked by the file's sha256).
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from supervisor.config import schema
from supervisor.config.fields import Reader, join
from supervisor.config.load import Mark, MarkedMap
from supervisor.config.values import show

__all__ = ["read_environment"]

_PYPI_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_NPM = re.compile(r"(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*@[0-9][A-Za-z0-9.+-]*")
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tgz")
_MAX_REQUIREMENTS_BYTES = 256 * 1024


def read_environment(
    r: Reader, item: MarkedMap, p: str, root: Path, *, section: str, kind: str | None
) -> schema.EnvSpec | None:
    """The entry's ``EnvSpec``, or None when it has neither key (problems recorded on ``r``)."""
    if item.get("install") is None and item.get("requirements") is None:
        return None
    for key in ("install", "requirements"):
        if kind == "remote" and item.get(key) is not None:
            r.fail(item.key_marks[key], join(p, key), "is only for type local")
            return None
    if item.get("python") is not None:
        r.fail(
            item.key_marks["python"],
            join(p, "python"),
            "cannot be combined with install:/requirements: (spctl builds that environment)",
        )
    install = _install(r, item, p, root, section=section)
    requirements, requirements_file = _requirements(r, item, p, root)
    if install is None and item.get("install") is not None:
        return None
    install_text, install_kind, package = install or (None, None, None)
    return schema.EnvSpec(
        install=install_text,
        install_kind=install_kind,
        package=package,
        requirements=requirements,
        requirements_file=requirements_file,
    )


def _install(
    r: Reader, item: MarkedMap, p: str, root: Path, *, section: str
) -> tuple[str, str, str] | None:
    text = r.string(item, "install", p)
    if text is None:
        return None
    mark, field_ = item.mark_of("install"), join(p, "install")
    if section != "servers" or item.get("command") is None:
        r.fail(
            mark,
            field_,
            "needs command: (the server's executable, found in the environment's bin/), "
            "in servers.yaml",
        )
        return None
    if text.startswith("pypi:"):
        spec = text[len("pypi:") :].strip()
        name, sep, version = spec.partition("==")
        if not sep or not _PYPI_NAME.fullmatch(name.strip()) or not version.strip():
            r.fail(
                mark, field_, f"expected pypi:NAME==VERSION (an exact version), got {show(text)}"
            )
            return None
        try:
            Requirement(spec)
        except InvalidRequirement as exc:
            r.fail(mark, field_, f"not a valid requirement ({exc})")
            return None
        return text, "pypi", f"{canonicalize_name(name)}=={version.strip()}"
    if text.startswith("npm:"):
        spec = text[len("npm:") :].strip()
        if not _NPM.fullmatch(spec):
            r.fail(mark, field_, f"expected npm:NAME@VERSION (an exact version), got {show(text)}")
            return None
        return text, "npm", spec
    if text.endswith(_ARCHIVES):
        target = _inside_file(r, mark, field_, root, text)
        return None if target is None else (text, "file", str(target))
    r.fail(
        mark,
        field_,
        f"expected pypi:NAME==VERSION, npm:NAME@VERSION or a path to a .whl/.tar.gz/.zip inside "
        f"{root.name}/, got {show(text)}",
    )
    return None


def _requirements(
    r: Reader, item: MarkedMap, p: str, root: Path
) -> tuple[tuple[str, ...], Path | None]:
    value = item.get("requirements")
    if value is None:
        return (), None
    mark, field_ = item.mark_of("requirements"), join(p, "requirements")
    if isinstance(value, str):
        text = r.string(item, "requirements", p)
        if text is None:
            return (), None
        target = _inside_file(r, mark, field_, root, text)
        if target is None:
            return (), None
        try:
            raw = target.read_bytes()
            if len(raw) > _MAX_REQUIREMENTS_BYTES:
                r.fail(mark, field_, f"{text} is larger than {_MAX_REQUIREMENTS_BYTES} bytes")
                return (), target
            lines = raw.decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            r.fail(mark, field_, f"cannot read {text}: {getattr(exc, 'strerror', None) or exc}")
            return (), target
        found: list[str] = []
        for number, line in enumerate(lines, 1):
            requirement = line.split(" #", 1)[0].strip()
            if not requirement or requirement.startswith("#"):
                continue
            problem = _requirement_problem(requirement)
            if problem is not None:
                r.fail(mark, field_, f"{text}, line {number}: {problem}")
            else:
                found.append(requirement)
        return tuple(found), target
    strings = r.strings(item, "requirements", p)
    if strings is None:
        return (), None
    found = []
    for requirement, req_mark, req_field in strings:
        problem = _requirement_problem(requirement)
        if problem is not None:
            r.fail(req_mark, req_field, problem)
        else:
            found.append(requirement.strip())
    if not found and not r.problems:
        r.fail(mark, field_, "expected at least one requirement (or leave requirements: out)")
    return tuple(found), None


def _requirement_problem(text: str) -> str | None:
    if text.startswith("-"):
        return f"pip options are not supported here, only requirements ({show(text)})"
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        return f"not a valid PEP 508 requirement: {show(text)} ({exc})"
    if requirement.url:
        return f"a direct URL requirement cannot be locked with hashes ({show(text)})"
    return None


def _inside_file(r: Reader, mark: Mark, field_: str, root: Path, text: str) -> Path | None:
    if not text or "\0" in text or Path(text).is_absolute():
        r.fail(mark, field_, f"expected a relative path inside {root.name}/, got {show(text)}")
        return None
    try:
        target = (root / text).resolve()
    except (OSError, RuntimeError) as exc:
        r.fail(mark, field_, f"cannot be checked: {getattr(exc, 'strerror', None) or exc}")
        return None
    if not target.is_relative_to(root) or target == root:
        r.fail(mark, field_, f"resolves outside {root.name}/ ({show(text)})")
        return None
    if not target.is_file():
        r.fail(mark, field_, f"does not exist or is not a file ({show(text)})")
        return None
    return target
