"""Write (or check) the JSON Schemas in ``schemas/`` from the event declarations in ``lvsbus.wire.catalog``."""
from __future__ import annotations

import json
import os

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import ENVELOPE_VERSION, REGISTRY


TEST_NAMESPACE = "test."  # event types tests declare for themselves; not part of the contract


def envelope_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:lvsbus:envelope:{ENVELOPE_VERSION}",
        "title": f"lvsbus event envelope v{ENVELOPE_VERSION}",
        "description": (
            "Every event on the bus and in the log is a msgpack array of these items, in this order. "
            "The log frames each body with <u32 length, u32 crc32(seq_le64 + body), u64 seq>."
        ),
        "type": "array",
        "prefixItems": [
            {"const": ENVELOPE_VERSION, "description": "envelope version"},
            {"type": "integer", "minimum": 1, "description": "seq: global sequence number, contiguous, assigned by the broker"},
            {"type": "string", "minLength": 1, "maxLength": 64, "description": "node: the router that recorded it"},
            {"type": "string", "minLength": 1, "maxLength": 64, "description": "source: the service that published it"},
            {"type": "string", "maxLength": 96, "description": "type: stable dotted name, e.g. router.role_changed"},
            {"type": "integer", "minimum": 1, "description": "version: schema version of the payload as written"},
            {"type": "integer", "description": "mono_ns: CLOCK_MONOTONIC of the recording broker (ns)"},
            {"type": "integer", "description": "wall_ns: wall clock of the recording broker (ns), metadata only"},
            {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 1}], "description": "cause: seq of the event that caused it"},
            {"type": "object", "description": "payload: matches schemas/<type>.v<version>.json"},
        ],
        "items": False,
        "minItems": 10,
    }


def generated() -> dict[str, str]:
    """File name -> exact text, for every schema the code declares."""
    out = {f"envelope.v{ENVELOPE_VERSION}.json": _dump(envelope_schema())}
    for spec in REGISTRY.all_specs():
        if spec.type.startswith(TEST_NAMESPACE):
            continue  # declared by a test at run time, never on the wire
        out[f"{spec.schema_id}.json"] = _dump(spec.json_schema())
    return out


def _dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def drift(directory: str) -> list[str]:
    """What differs between the code and the files in ``directory``."""
    problems = []
    want = generated()
    have = {f for f in os.listdir(directory) if f.endswith(".json")} if os.path.isdir(directory) else set()
    for name, text in want.items():
        path = os.path.join(directory, name)
        if name not in have:
            problems.append(f"{name}: declared in code, missing in {directory}/")
        elif open(path, encoding="utf-8").read() != text:
            problems.append(f"{name}: differs from the declaration in code")
    for name in sorted(have - want.keys()):
        problems.append(f"{name}: in {directory}/ but not declared in code (a removed event version? keep it declared)")
    return problems


def export(directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, text in generated().items():
        path = os.path.join(directory, name)
        if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            written.append(name)
    return written
