"""schemas/ and the code agree, and the JSON Schemas accept and refuse what the code does."""
import copy
import json
from pathlib import Path

import jsonschema
import pytest

from lvsbus.wire import catalog  # noqa: F401
from lvsbus.wire.events import REGISTRY
from lvsbus.wire.schema import Bool, Bytes, Dict, Enum, Float, Int, Json, List, Nullable, SchemaError, Str, Struct
from lvsbus.wire.export import TEST_NAMESPACE, drift

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schemas_dir_matches_the_code():
    problems = drift(str(SCHEMAS))
    assert not problems, "schemas/ and lvsbus.wire.catalog drifted apart; run `lvsbus schemas export`:\n" + "\n".join(problems)


def example(field):
    """A valid value for a field (the smallest interesting one)."""
    if isinstance(field, Struct):
        return {k: example(f) for k, f in field.fields.items()}
    if isinstance(field, Int):
        return field.min if field.min is not None else (field.max if field.max is not None and field.max < 0 else 0)
    if isinstance(field, Float):
        return float(field.min) if field.min is not None else 0.5
    if isinstance(field, Str):
        return "x" * max(1, field.min_len)
    if isinstance(field, Bool):
        return True
    if isinstance(field, Enum):
        return field.values[0]
    if isinstance(field, Nullable):
        return example(field.inner)
    if isinstance(field, List):
        return [example(field.item)]
    if isinstance(field, Dict):
        return {"k": example(field.value)}
    if isinstance(field, Json):
        return {"any": [1, "two"]}
    if isinstance(field, Bytes):
        return "AA=="  # JSON side only; see below
    raise AssertionError(field)


def wrong(field):
    """A value of the wrong type for a field."""
    if isinstance(field, (Int, Float)):
        return "not a number"
    return 12345


SPECS = [s for s in REGISTRY.all_specs() if not s.type.startswith(TEST_NAMESPACE)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.schema_id)
def test_json_schema_and_code_agree_on_examples(spec):
    schema = json.loads((SCHEMAS / f"{spec.schema_id}.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = example(spec.payload)
    has_bytes = any(isinstance(f, Bytes) for f in spec.payload.fields.values())
    validator.validate(good)
    if not has_bytes:
        spec.payload.check(good, "payload")
    bad_cases = [dict(good, unexpected_field=1)]
    for name, f in spec.payload.fields.items():
        if name not in spec.payload.optional:
            missing = copy.deepcopy(good)
            missing.pop(name)
            bad_cases.append(missing)
        if not isinstance(f, (Json, Nullable)):
            bad_cases.append(dict(good, **{name: wrong(f)}))
    for bad in bad_cases:
        assert not validator.is_valid(bad), bad
        with pytest.raises(SchemaError):
            spec.payload.check(bad, "payload")


def test_every_event_type_has_a_doc():
    for spec in SPECS:
        assert spec.doc.strip(), spec.schema_id
