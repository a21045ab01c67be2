"""An MCP Registry ``server.json`` (or a registry API response) → what ``spctl add`` writes
(DESIGN §9). Pure: data in, a ``Plan`` out, ``ServerJsonError`` naming the field otherwise.

- The package chosen: a ``stdio`` package of ``registryType`` pypi, then npm; otherwise a
  ``remotes[]`` entry of type ``streamable-http`` (→ ``type: remote``). Other registry types
  (``oci``, ``nuget``, ``mcpb``) are refused with a message that says so.
- Arguments (``packageArguments``; ``runtimeArguments`` are for ``uvx``/``npx``, which spctl
  does not use, and are reported as ignored) and ``environmentVariables``: ``value`` (with
  ``{var}`` filled from ``variables``) is fixed; otherwise the value given (``--env``/``--arg``),
  then ``default``; ``isRequired`` without any is an error that quotes the ``description``.
  ``isSecret`` becomes a ``${VAR}`` reference, never a literal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KNOWN_SCHEMAS", "Plan", "ServerJsonError", "plan_from", "unwrap"]

KNOWN_SCHEMAS = ("2025-09-29", "2025-10-17", "2025-12-11")
_SCHEMA_URL = re.compile(
    r"https://static\.modelcontextprotocol\.io/schemas/([0-9-]+)/server\.schema\.json"
)
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OFFICIAL = "io.modelcontextprotocol.registry/official"
_DEFAULT_INDEXES = ("https://pypi.org", "https://pypi.org/simple", "https://registry.npmjs.org")


class ServerJsonError(ValueError):
    """The document cannot be mapped; the message names the field and the cause."""


class MissingInput(ServerJsonError):
    """A required input has no value, default or given one: on a terminal, ``spctl add`` asks
    for it (``key``, described by ``description``) and maps again."""

    def __init__(self, message: str, key: str, description: str) -> None:
        super().__init__(message)
        self.key = key
        self.description = description


@dataclass(frozen=True)
class Plan:
    """What one server.json becomes (``kind``: ``pypi``, ``npm`` or ``remote``)."""

    registry_name: str
    version: str
    kind: str
    package: str = ""  # pypi: NAME (version in ``version``); npm: NAME
    args: tuple[str, ...] = ()  # after the command
    env: tuple[tuple[str, str], ...] = ()  # name → literal or ${VAR}
    url: str = ""  # remote
    headers: tuple[tuple[str, str], ...] = ()  # remote
    secrets: tuple[tuple[str, str, bool], ...] = ()  # (variable, description, required)
    notes: tuple[str, ...] = field(default=())


def unwrap(doc: Any) -> Mapping[str, Any]:
    """The server of a registry API response (``{"server": …, "_meta": …}``), or ``doc`` itself;
    a server whose registry status is not ``active`` is refused."""
    if not isinstance(doc, Mapping):
        raise ServerJsonError(f"expected a JSON object, got {type(doc).__name__}")
    if "server" in doc and isinstance(doc["server"], Mapping):
        meta = doc.get("_meta")
        official = meta.get(_OFFICIAL) if isinstance(meta, Mapping) else None
        status = official.get("status") if isinstance(official, Mapping) else None
        if status is not None and status != "active":
            raise ServerJsonError(f"the registry lists this server as {status!r}, not active")
        return doc["server"]
    return doc


def plan_from(doc: Mapping[str, Any], values: Mapping[str, str]) -> Plan:
    """Map a server.json (``values``: what ``--env``/``--arg`` gave, by input name)."""
    schema = doc.get("$schema")
    if schema is not None:
        found = _SCHEMA_URL.fullmatch(schema) if isinstance(schema, str) else None
        if found is None or found.group(1) not in KNOWN_SCHEMAS:
            raise ServerJsonError(
                f"$schema: unknown server.json schema {schema!r} (this spctl reads "
                f"{', '.join(KNOWN_SCHEMAS)})"
            )
    name = _text(doc, "name", "")
    version = _text(doc, "version", "")
    packages = _list(doc, "packages", "")
    remotes = _list(doc, "remotes", "")
    if not packages and not remotes:
        raise ServerJsonError("has neither packages[] nor remotes[]: nothing to run")
    kinds = [(i, p) for i, p in enumerate(packages) if isinstance(p, Mapping)]
    for wanted in ("pypi", "npm"):
        for index, package in kinds:
            transport = package.get("transport")
            ttype = transport.get("type") if isinstance(transport, Mapping) else None
            if package.get("registryType") == wanted and ttype in (None, "stdio"):
                return _package(name, version, package, f"packages[{index}]", values)
    for index, remote in enumerate(remotes):
        if isinstance(remote, Mapping) and remote.get("type") == "streamable-http":
            return _remote(name, version, remote, f"remotes[{index}]", values)
    found_types = sorted(
        {str(p.get("registryType")) for _, p in kinds}
        | {f"remote {r.get('type')}" for r in remotes if isinstance(r, Mapping)}
    )
    raise ServerJsonError(
        f"packages[]/remotes[]: {', '.join(found_types) or 'nothing usable'} not supported "
        "(spctl runs pypi stdio packages and streamable-http remotes; oci images are not run)"
    )


def _package(
    name: str, version: str, package: Mapping[str, Any], p: str, values: Mapping[str, str]
) -> Plan:
    kind = str(package["registryType"])
    identifier = _text(package, "identifier", p)
    exact = package.get("version", version)
    if not isinstance(exact, str) or not exact or exact == "latest":
        raise ServerJsonError(f"{p}.version: an exact version is required, got {exact!r}")
    base = package.get("registryBaseUrl")
    if isinstance(base, str) and base.rstrip("/") not in _DEFAULT_INDEXES:
        raise ServerJsonError(
            f"{p}.registryBaseUrl: {base!r} is not the default index (only it is supported)"
        )
    secrets: list[tuple[str, str, bool]] = []
    args: list[str] = []
    for index, arg in enumerate(_list(package, "packageArguments", p)):
        args.extend(_argument(arg, f"{p}.packageArguments[{index}]", values, secrets))
    env: list[tuple[str, str]] = []
    for index, var in enumerate(_list(package, "environmentVariables", p)):
        found = _input(var, f"{p}.environmentVariables[{index}]", values, secrets, env_var=True)
        if found is not None:
            env.append(found)
    notes = []
    if _list(package, "runtimeArguments", p):
        notes.append(
            f"{p}.runtimeArguments are for {package.get('runtimeHint') or 'the runtime'} "
            "(uvx/npx), which spctl does not use: ignored"
        )
    return Plan(
        name,
        exact,
        kind,
        identifier,
        tuple(args),
        tuple(env),
        secrets=tuple(secrets),
        notes=tuple(notes),
    )


def _remote(
    name: str, version: str, remote: Mapping[str, Any], p: str, values: Mapping[str, str]
) -> Plan:
    url = _text(remote, "url", p)
    secrets: list[tuple[str, str, bool]] = []
    url = _fill(url, remote, f"{p}.url", values, secrets)
    headers = []
    for index, header in enumerate(_list(remote, "headers", p)):
        found = _input(header, f"{p}.headers[{index}]", values, secrets, env_var=False)
        if found is not None:
            headers.append(found)
    return Plan(name, version, "remote", url=url, headers=tuple(headers), secrets=tuple(secrets))


def _argument(
    arg: Any, p: str, values: Mapping[str, str], secrets: list[tuple[str, str, bool]]
) -> list[str]:
    if not isinstance(arg, Mapping):
        raise ServerJsonError(f"{p}: expected an object")
    kind = arg.get("type")
    if kind == "positional":
        key = arg.get("valueHint") or arg.get("name") or ""
        found = _value(arg, str(key), p, values, secrets)
        return [] if found is None else [found]
    if kind == "named":
        flag = _text(arg, "name", p)
        if not flag.startswith("-"):
            flag = "--" + flag
        found = _value(arg, flag.lstrip("-"), p, values, secrets)
        if found is None:
            return []
        return [f"{flag}={found}"] if found else [flag]
    raise ServerJsonError(f"{p}.type: expected positional or named, got {kind!r}")


def _input(
    item: Any,
    p: str,
    values: Mapping[str, str],
    secrets: list[tuple[str, str, bool]],
    *,
    env_var: bool,
) -> tuple[str, str] | None:
    if not isinstance(item, Mapping):
        raise ServerJsonError(f"{p}: expected an object")
    key = _text(item, "name", p)
    if env_var and not _ENV_NAME.fullmatch(key):
        raise ServerJsonError(f"{p}.name: {key!r} is not an environment variable name")
    found = _value(item, key, p, values, secrets)
    return None if found is None else (key, found)


def _value(
    item: Mapping[str, Any],
    key: str,
    p: str,
    values: Mapping[str, str],
    secrets: list[tuple[str, str, bool]],
) -> str | None:
    """The input's value (None: optional and not given, left out)."""
    description = str(item.get("description") or "no description")
    required = bool(item.get("isRequired"))
    if item.get("isSecret"):
        variable = _variable_of(key)
        secrets.append((variable, description, required))
        return f"${{{variable}}}" if required or variable in values else None
    if isinstance(item.get("value"), str):
        return _fill(item["value"], item, p, values, secrets)
    if key in values:
        return _escape(values[key])
    default = item.get("default")
    if isinstance(default, str | int | float) and not isinstance(default, bool):
        return _escape(str(default))
    if required:
        raise MissingInput(
            f"{p}: {key} is required ({description}); give it with --env {key}=VALUE "
            f"(or --arg {key}=VALUE for an argument)",
            key,
            description,
        )
    return None


def _fill(
    text: str,
    item: Mapping[str, Any],
    p: str,
    values: Mapping[str, str],
    secrets: list[tuple[str, str, bool]],
) -> str:
    """``{var}`` in ``text`` from the item's ``variables`` (their value, default or input)."""
    variables = item.get("variables")
    variables = variables if isinstance(variables, Mapping) else {}

    def one(match: re.Match[str]) -> str:
        var = match.group(1)
        spec = variables.get(var)
        if not isinstance(spec, Mapping):
            raise ServerJsonError(f"{p}: {{{var}}} is not declared in variables")
        found = _value(spec, var, f"{p}.variables.{var}", values, secrets)
        return found or ""

    return _VAR.sub(one, _escape_dollars(text))


def _variable_of(key: str) -> str:
    variable = re.sub(r"[^A-Za-z0-9_]+", "_", key.lstrip("-")).strip("_").upper()
    return variable if _ENV_NAME.fullmatch(variable) else f"VAR_{variable}"


def _escape(text: str) -> str:
    """A literal value: a ``${`` in it must not be expanded by the registry loader."""
    return text.replace("${", "$${")


def _escape_dollars(text: str) -> str:
    return text.replace("${", "$${")


def _text(doc: Mapping[str, Any], key: str, p: str) -> str:
    value = doc.get(key)
    where = f"{p}.{key}" if p else key
    if not isinstance(value, str) or not value.strip():
        raise ServerJsonError(f"{where}: missing (a non-empty string is required)")
    return value


def _list(doc: Mapping[str, Any], key: str, p: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        where = f"{p}.{key}" if p else key
        raise ServerJsonError(f"{where}: expected a list, got {type(value).__name__}")
    return value
