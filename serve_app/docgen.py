"""Writes the references that must not drift from the code: docs/protocol.md from the event models
(`serve_app/events.py`) and the routes, docs/configuration.md from the JSON schema of `AppConfig`'s
sections and of each registered backend's config model. `tests/test_docgen.py` fails when either file is stale.

    .venv/bin/python -m serve_app.docgen          # rewrite both
"""

from __future__ import annotations

import inspect
import json
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from avatar_core import registry
from avatar_core.config import AppConfig
from serve_app import events

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
STAGE_SECTIONS = set(registry.STAGES)


def _local(text: str) -> str:
    """Defaults that name this machine's paths, written so the file is the same on every checkout."""
    return text.replace(str(ROOT), "<checkout>").replace(tempfile.gettempdir(), "<tmp>").replace(
        str(Path.home()), "~"
    )


def _type(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " | ".join(_type(p, defs) for p in prop["anyOf"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list[{_type(prop.get('items', {}), defs)}]"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map[str, {_type(prop['additionalProperties'], defs)}]"
    if prop.get("format") == "path":
        return "path"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null"}.get(kind, kind)


def _bounds(prop: dict) -> str:
    marks = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    return ", ".join(f"{sign} {prop[key]:g}" for key, sign in marks.items() if key in prop)


def _cell(text: str) -> str:
    return _local(text).replace("|", "\\|").replace("\n", " ")


def fields_table(model: type[BaseModel], skip: frozenset[str] = frozenset()) -> list[str]:
    """A markdown table of a model's fields from its JSON schema (defaults from the model itself,
    so a default_factory shows its value too)."""
    schema = model.model_json_schema()
    required, defs = set(schema.get("required", [])), schema.get("$defs", {})
    rows = ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    for name, prop in schema.get("properties", {}).items():
        if name in skip:
            continue
        if name in required:
            default = "required"
        else:
            value = model.model_fields[name].get_default(call_default_factory=True)
            value = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            default = f"`{json.dumps(value, default=str)}`"
        bounds = _bounds(prop)
        about = " ".join(filter(None, [prop.get("description", ""), f"({bounds})" if bounds else ""]))
        rows.append(f"| `{name}` | {_cell(_type(prop, defs))} | {_cell(default)} | {_cell(about)} |")
    return rows


def _doc(model: type) -> str:
    return _local(inspect.cleandoc(model.__doc__ or "")).replace("\n", " ")


def _model_section(model: type[BaseModel], level: str = "###") -> list[str]:
    kind = model.model_fields["type"].annotation.__args__[0]  # Literal["..."]
    out = [f"{level} `{kind}`", ""]
    if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
        out += [_doc(model), ""]
    return out + fields_table(model, skip=frozenset({"type"})) + [""]


def _routes(router: Any) -> list[Any]:
    """The app's own routes (FastAPI >= 0.137 nests included routers instead of flattening them)."""
    found = []
    for route in router.routes:
        if hasattr(route, "original_router"):
            found += _routes(route.original_router)
        elif hasattr(route, "endpoint") and route.path.startswith(("/api/v1", "/ws", "/healthz")):
            found.append(route)
    return found


def protocol_md() -> str:
    from serve_app.ingress import app

    out = [
        "# Protocol reference",
        "",
        "Generated from `serve_app/events.py` and the ingress's routes by `python -m serve_app.docgen`;",
        "do not edit by hand. How the pieces fit: [architecture](architecture.md).",
        "",
        "## HTTP",
        "",
        "Errors are `{\"error\": {\"code\", \"message\"}}` with a 4xx or 5xx status. `POST /api/v1/turn`",
        "streams the turn's events below as NDJSON, a segment's bytes at its `url`.",
        "",
        "| method | path | what |",
        "| --- | --- | --- |",
    ]
    for route in _routes(app):
        methods = ", ".join(sorted(getattr(route, "methods", None) or ["WEBSOCKET"]))
        about = inspect.cleandoc(route.endpoint.__doc__ or "").split("\n\n")[0]
        out.append(f"| {methods} | `{route.path}` | {_cell(about)} |")
    out += [
        "",
        "## WebSocket `/ws`: client to server",
        "",
        "Text messages are JSON objects discriminated by `type`; anything else is answered with an",
        "`error` event (code `bad_message`, `message_too_large`) and the session goes on. Binary",
        "messages are audio (see `mic`).",
        "",
    ]
    for model in events.CLIENT_MESSAGES:
        out += _model_section(model)
    out += [
        "## Server to client",
        "",
        "JSON events (NDJSON lines over HTTP); over the WebSocket each `segment` and `idle` event is",
        "followed at once by one binary message of `bytes` bytes. A turn's events come in this order:",
        "`turn`, `transcript`, `reply`…, `segment`…, then `done` or `error`.",
        "",
    ]
    for model in events.SERVER_EVENTS:
        out += _model_section(model)
    out += ["### `Span` (in `done.spans`)", ""] + fields_table(events.Span) + [""]
    return "\n".join(out)


def installed_backends(stage: str) -> dict[str, type]:
    """The backends that installed packages declare (not ones a test registered in this process)."""
    modules = tuple(entry.value for entry in entry_points(group=registry.ENTRY_POINTS))
    return {name: cls for name, cls in registry.backends_of(stage).items()
            if cls.__module__ in modules or cls.__module__.startswith(tuple(m + "." for m in modules))}


def configuration_md() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from `avatar_core.config.AppConfig` and the backends' config models by",
        "`python -m serve_app.docgen`; do not edit by hand. The application's settings are the",
        "`args` of `serve_config.yaml`; every field has a default. Serve's own settings (replicas,",
        "autoscaling, CPUs and GPUs per deployment) are in the same file's `deployments` section.",
        "",
    ]
    for section, field in AppConfig.model_fields.items():
        if section in STAGE_SECTIONS:
            continue
        model = field.annotation
        out += [f"## `{section}`", ""]
        if model.__doc__ and model.__doc__ is not BaseModel.__doc__:
            out += [_doc(model), ""]
        out += fields_table(model) + [""]
    for stage in registry.STAGES:
        default = registry.DEFAULTS[stage]
        out += [f"## `{stage}`", "", f"Names its backend with `backend` (default `{default}`); each takes:", ""]
        for name, cls in sorted(installed_backends(stage).items()):
            out += [f"### `{stage}: {{backend: {name}}}`", ""]
            if cls.__doc__:
                out += [_doc(cls).split(". ")[0].rstrip(".") + ".", ""]
            out += fields_table(cls.Config, skip=frozenset({"backend"})) + [""]
    return "\n".join(out)


def generated() -> dict[Path, str]:
    return {DOCS / "protocol.md": protocol_md(), DOCS / "configuration.md": configuration_md()}


def main() -> None:
    for path, text in generated().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
