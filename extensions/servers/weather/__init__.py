"""Weather: the seed's weather MCP server, in Python, against a real HTTP weather API.

Tool ``get_weather`` {location} asks ``config.apiUrl`` (default: wttr.in's JSON format,
``https://wttr.in/{location}?format=j1``; ``{location}`` is replaced, URL-quoted) and answers with
the current conditions. Units: ``config.units`` ``metric`` (default) or ``imperial``; an
``apiKey`` (config, or ``$WEATHER_API_KEY`` as in the seed) is sent as ``X-API-Key`` when set.
Without network, or when the service fails, the tool returns a clear error (``isError``) — it
never makes weather up.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from worker.api import INVALID_PARAMS, METHOD_NOT_FOUND, McpError

metadata = {
    "name": "weather",
    "version": "1.0.0",
    "description": "Current weather for a location, from an HTTP weather API",
    "capabilities": ["tools"],
}

DEFAULT_API = "https://wttr.in/{location}?format=j1"

TOOLS = [
    {
        "name": "get_weather",
        "description": "Get current weather for a location",
        "inputSchema": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    }
]


class WeatherUnavailable(Exception):
    """The weather service could not answer; the message says why."""


def fetch(api: str, location: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    url = api.replace("{location}", urllib.parse.quote(location))
    request = urllib.request.Request(url, headers={"User-Agent": "spctl-weather/1.0"})
    if api_key:
        request.add_header("X-API-Key", api_key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as exc:
        raise WeatherUnavailable(f"the weather service answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeatherUnavailable(f"the weather service is unreachable ({reason})") from None
    except ValueError:
        raise WeatherUnavailable("the weather service did not answer with JSON") from None
    if not isinstance(data, dict):
        raise WeatherUnavailable("the weather service answered with something unexpected")
    return data


def describe(data: dict[str, Any], location: str, units: str) -> str:
    """wttr.in's j1 format: ``current_condition[0]`` with temp_C/temp_F, weatherDesc, …"""
    try:
        now = data["current_condition"][0]
        desc = now["weatherDesc"][0]["value"]
        if units == "imperial":
            temp, wind = f"{now['temp_F']} °F", f"{now['windspeedMiles']} mph"
        else:
            temp, wind = f"{now['temp_C']} °C", f"{now['windspeedKmph']} km/h"
        humidity = now["humidity"]
    except (KeyError, IndexError, TypeError):
        raise WeatherUnavailable("the weather service's answer has no current conditions") from None
    return f"{location}: {desc}, {temp}, humidity {humidity}%, wind {wind}"


def create_handler(config: dict[str, Any]) -> Callable[[str, dict[str, Any]], Any]:
    api = str(config.get("apiUrl") or DEFAULT_API)
    units = str(config.get("units", "metric"))
    api_key = config.get("apiKey") or os.environ.get("WEATHER_API_KEY")
    timeout = float(config.get("httpTimeout", 10))

    def handle(method: str, params: dict[str, Any]) -> Any:  # sync: runs in a worker thread
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            if params.get("name") != "get_weather":
                raise McpError(INVALID_PARAMS, f"Unknown tool: {params.get('name')}")
            location = (params.get("arguments") or {}).get("location")
            if not isinstance(location, str) or not location.strip():
                raise McpError(INVALID_PARAMS, "location must be a non-empty string")
            try:
                text = describe(fetch(api, location, api_key, timeout), location, units)
            except WeatherUnavailable as exc:
                return {
                    "content": [{"type": "text", "text": f"no weather: {exc}"}],
                    "isError": True,
                }
            return {"content": [{"type": "text", "text": text}]}
        raise McpError(METHOD_NOT_FOUND, f"Method not found: {method}")

    return handle
