"""A small, fast payload schema language: one description gives both the validator and the JSON Schema.

Event payloads are declared once in Python with these field types (see ``lvsbus.wire.catalog``). From that
declaration we derive:

* a validator (``Field.check(value, path)``), used at every trust boundary (bus frame, log record);
  it raises ``SchemaError`` naming the path and what was allowed;
* the language-neutral JSON Schema written to ``schemas/`` (``Field.json_schema()``); a test fails
  when the files there and the code drift apart.

Pure: no I/O. Values are what msgpack decodes: dict, list, str, bytes, int, float, bool, None.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping


class SchemaError(ValueError):
    """A value does not match its declared schema."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


_MISSING = object()


def _shown(value: Any) -> str:
    """A value in an error message: a string or bytes clipped, anything else by its type (the repr
    of a deeply nested container recurses past Python's limit, of a large one costs its size)."""
    t = type(value)
    if t is str or t is bytes:
        return repr(value[:80]) + ("..." if len(value) > 80 else "")
    if t is int or t is float or t is bool or value is None:
        return repr(value)[:80]
    return f"a {t.__name__}"


class Field:
    doc: str = ""

    def check(self, value: Any, path: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def json_schema(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _with_doc(self, schema: dict) -> dict:
        if self.doc:
            schema["description"] = self.doc
        return schema


class Int(Field):
    def __init__(self, min: int | None = None, max: int | None = None, doc: str = "") -> None:
        self.min, self.max, self.doc = min, max, doc

    def check(self, value: Any, path: str) -> None:
        if type(value) is not int:
            raise SchemaError(path, f"expected an integer, got {type(value).__name__}")
        if self.min is not None and value < self.min:
            raise SchemaError(path, f"{value} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise SchemaError(path, f"{value} is above the maximum {self.max}")

    def json_schema(self) -> dict:
        s: dict = {"type": "integer"}
        if self.min is not None:
            s["minimum"] = self.min
        if self.max is not None:
            s["maximum"] = self.max
        return self._with_doc(s)


class Float(Field):
    """A number; integers are accepted too (msgpack keeps 1.0 and 1 apart, JSON does not)."""

    def __init__(self, min: float | None = None, max: float | None = None, doc: str = "") -> None:
        self.min, self.max, self.doc = min, max, doc

    def check(self, value: Any, path: str) -> None:
        t = type(value)
        if t is not float and t is not int:
            raise SchemaError(path, f"expected a number, got {t.__name__}")
        if value != value:
            raise SchemaError(path, "NaN is not allowed")
        if self.min is not None and value < self.min:
            raise SchemaError(path, f"{value} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise SchemaError(path, f"{value} is above the maximum {self.max}")

    def json_schema(self) -> dict:
        s: dict = {"type": "number"}
        if self.min is not None:
            s["minimum"] = self.min
        if self.max is not None:
            s["maximum"] = self.max
        return self._with_doc(s)


class Str(Field):
    def __init__(self, max_len: int = 4096, min_len: int = 0, doc: str = "") -> None:
        self.max_len, self.min_len, self.doc = max_len, min_len, doc

    def check(self, value: Any, path: str) -> None:
        if type(value) is not str:
            raise SchemaError(path, f"expected a string, got {type(value).__name__}")
        n = len(value)
        if n > self.max_len:
            raise SchemaError(path, f"string of {n} characters is longer than {self.max_len}")
        if n < self.min_len:
            raise SchemaError(path, f"string of {n} characters is shorter than {self.min_len}")

    def json_schema(self) -> dict:
        s: dict = {"type": "string", "maxLength": self.max_len}
        if self.min_len:
            s["minLength"] = self.min_len
        return self._with_doc(s)


class Bytes(Field):
    """Raw bytes (msgpack bin). JSON has no bytes: the schema says so with contentEncoding."""

    def __init__(self, max_len: int = 65536, doc: str = "") -> None:
        self.max_len, self.doc = max_len, doc

    def check(self, value: Any, path: str) -> None:
        if type(value) is not bytes:
            raise SchemaError(path, f"expected bytes, got {type(value).__name__}")
        if len(value) > self.max_len:
            raise SchemaError(path, f"{len(value)} bytes is longer than {self.max_len}")

    def json_schema(self) -> dict:
        return self._with_doc(
            {"type": "string", "contentEncoding": "base64", "x-msgpack": "bin", "maxLength": self.max_len}
        )


class Bool(Field):
    def __init__(self, doc: str = "") -> None:
        self.doc = doc

    def check(self, value: Any, path: str) -> None:
        if type(value) is not bool:
            raise SchemaError(path, f"expected true or false, got {type(value).__name__}")

    def json_schema(self) -> dict:
        return self._with_doc({"type": "boolean"})


class Enum(Field):
    def __init__(self, *values: str, doc: str = "") -> None:
        if not values:
            raise ValueError("Enum needs at least one value")
        self.values = tuple(values)
        self._set = frozenset(values)
        self.doc = doc

    def check(self, value: Any, path: str) -> None:
        if type(value) is not str or value not in self._set:
            raise SchemaError(path, f"{_shown(value)} is not one of {', '.join(self.values)}")

    def json_schema(self) -> dict:
        return self._with_doc({"type": "string", "enum": list(self.values)})


class Nullable(Field):
    def __init__(self, inner: Field, doc: str = "") -> None:
        self.inner, self.doc = inner, doc or inner.doc

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            self.inner.check(value, path)

    def json_schema(self) -> dict:
        inner = self.inner.json_schema()
        inner.pop("description", None)
        return self._with_doc({"anyOf": [{"type": "null"}, inner]})


class List(Field):
    def __init__(self, item: Field, max_items: int = 100_000, doc: str = "") -> None:
        self.item, self.max_items, self.doc = item, max_items, doc

    def check(self, value: Any, path: str) -> None:
        t = type(value)
        if t is not list and t is not tuple:
            raise SchemaError(path, f"expected a list, got {t.__name__}")
        if len(value) > self.max_items:
            raise SchemaError(path, f"{len(value)} items is more than {self.max_items}")
        check = self.item.check
        for i, v in enumerate(value):
            check(v, f"{path}[{i}]")

    def json_schema(self) -> dict:
        return self._with_doc({"type": "array", "items": self.item.json_schema(), "maxItems": self.max_items})


class Dict(Field):
    """A map from string keys to values of one type."""

    def __init__(self, value: Field, max_items: int = 100_000, doc: str = "") -> None:
        self.value, self.max_items, self.doc = value, max_items, doc

    def check(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            raise SchemaError(path, f"expected an object, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise SchemaError(path, f"{len(value)} entries is more than {self.max_items}")
        check = self.value.check
        for k, v in value.items():
            if type(k) is not str:
                raise SchemaError(path, f"key {_shown(k)} is not a string")
            check(v, f"{path}.{k}")

    def json_schema(self) -> dict:
        return self._with_doc(
            {"type": "object", "additionalProperties": self.value.json_schema(), "maxProperties": self.max_items}
        )


class Json(Field):
    """Free-form data (its own module validates it further, e.g. the config model)."""

    _ATOMS = (str, int, float, bool, type(None), bytes)

    def __init__(self, doc: str = "", max_depth: int = 32) -> None:
        self.doc, self.max_depth = doc, max_depth

    def check(self, value: Any, path: str) -> None:
        self._walk(value, path, 0)

    def _walk(self, value: Any, path: str, depth: int) -> None:
        if depth > self.max_depth:
            raise SchemaError(path, f"nested deeper than {self.max_depth}")
        t = type(value)
        if t is dict:
            for k, v in value.items():
                if type(k) is not str:
                    raise SchemaError(path, f"key {_shown(k)} is not a string")
                self._walk(v, f"{path}.{k}", depth + 1)
        elif t is list or t is tuple:
            for i, v in enumerate(value):
                self._walk(v, f"{path}[{i}]", depth + 1)
        elif t not in self._ATOMS:
            raise SchemaError(path, f"type {t.__name__} cannot be carried")

    def json_schema(self) -> dict:
        return self._with_doc({})


class Struct(Field):
    """An object with known keys; unknown keys are refused (the schema is the whole contract)."""

    def __init__(
        self, fields: Mapping[str, Field], optional: Iterable[str] = (), doc: str = ""
    ) -> None:
        self.fields = dict(fields)
        self.optional = frozenset(optional)
        unknown = self.optional - self.fields.keys()
        if unknown:
            raise ValueError(f"optional names unknown fields: {sorted(unknown)}")
        self.doc = doc
        self._allowed = frozenset(self.fields)
        self._checks = tuple((k, f.check, k not in self.optional) for k, f in self.fields.items())

    def check(self, value: Any, path: str) -> None:
        if type(value) is not dict:
            raise SchemaError(path, f"expected an object, got {type(value).__name__}")
        if not self._allowed.issuperset(value):
            extra = sorted(str(k) for k in value if k not in self._allowed)
            raise SchemaError(path, f"unknown field(s) {', '.join(extra)}; allowed: {', '.join(sorted(self._allowed))}")
        get = value.get
        for key, check, required in self._checks:
            v = get(key, _MISSING)
            if v is _MISSING:
                if required:
                    raise SchemaError(path, f"missing required field {key!r}")
                continue
            check(v, f"{path}.{key}")

    def json_schema(self) -> dict:
        return self._with_doc(
            {
                "type": "object",
                "properties": {k: f.json_schema() for k, f in self.fields.items()},
                "required": [k for k in self.fields if k not in self.optional],
                "additionalProperties": False,
            }
        )


def compile_check(field: Field):
    """A predicate ``value -> bool``: True only where ``field.check`` would not raise.

    Straight-line Python generated from the declaration (no error paths built): the fast path of
    every validation. It may answer False where ``check`` passes; callers then run ``check`` for
    the verdict and the error. ``tests/process/test_replay.py``
    checks on real and mutated events that it is never more lenient than ``check``."""
    env: dict[str, Any] = {"_SE": SchemaError}
    lines = ["def check(v0):"]
    counter = [0]

    def new(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def emit(f: Any, var: str, ind: str) -> None:  # Any: dispatched on type(f) below
        t = type(f)
        if t is Int:
            cond = f"type({var}) is int"
            if f.min is not None:
                cond += f" and {var} >= {f.min!r}"
            if f.max is not None:
                cond += f" and {var} <= {f.max!r}"
            lines.append(f"{ind}if not ({cond}): return False")
        elif t is Str:
            lines.append(f"{ind}if type({var}) is not str or not {f.min_len!r} <= len({var}) <= {f.max_len!r}: return False")
        elif t is Bool:
            lines.append(f"{ind}if type({var}) is not bool: return False")
        elif t is Enum:
            name = new("E")
            env[name] = f._set
            lines.append(f"{ind}if type({var}) is not str or {var} not in {name}: return False")
        elif t is Nullable:
            lines.append(f"{ind}if {var} is not None:")
            emit(f.inner, var, ind + " ")
        elif t is List:
            item = new("v")
            lines.append(f"{ind}if (type({var}) is not list and type({var}) is not tuple) or len({var}) > {f.max_items!r}: return False")
            lines.append(f"{ind}for {item} in {var}:")
            emit(f.item, item, ind + " ")
        elif t is Dict:
            key, item = new("k"), new("v")
            lines.append(f"{ind}if type({var}) is not dict or len({var}) > {f.max_items!r}: return False")
            lines.append(f"{ind}for {key}, {item} in {var}.items():")
            lines.append(f"{ind} if type({key}) is not str: return False")
            emit(f.value, item, ind + " ")
        elif t is Struct:
            # the declared keys, an optional one present or not; anything else (an unknown key) is
            # left to the catalog's validator
            allowed = new("A")
            env[allowed] = f._allowed
            if not f.optional:
                lines.append(f"{ind}if type({var}) is not dict or {var}.keys() != {allowed}: return False")
            else:
                required = new("R")
                env[required] = frozenset(f.fields.keys() - f.optional)
                lines.append(f"{ind}if type({var}) is not dict or not {required} <= {var}.keys() <= {allowed}: return False")
            for key, sub in f.fields.items():
                val = new("v")
                if key in f.optional:
                    lines.append(f"{ind}if {key!r} in {var}:")
                    lines.append(f"{ind} {val} = {var}[{key!r}]")
                    emit(sub, val, ind + " ")
                else:
                    lines.append(f"{ind}{val} = {var}[{key!r}]")
                    emit(sub, val, ind)
        else:  # any other field type (Json, Float, Bytes, a new one): its own check
            name = new("F")
            env[name] = f.check
            lines.append(f"{ind}try:")
            lines.append(f"{ind} {name}({var}, '')")
            lines.append(f"{ind}except _SE:")
            lines.append(f"{ind} return False")

    emit(field, "v0", " ")
    lines.append(" return True")
    exec("\n".join(lines), env)  # noqa: S102 - code generated from the catalog's declarations only
    return env["check"]
