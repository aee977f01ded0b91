"""A request body through its model (daemon/http/request_models.py), or the API's 400 for it.

This is the one place where the validation library's errors become ours: code 4 (invalid_parameter),
the field in `param`, and a message that names the field and says what it takes, written from the
field's `Accepts` words or, failing those, from its JSON Schema. Of several faults the first is
answered, in this order: a field the server does not know or does not support, a missing field,
then the rest as the model declares its fields.
"""

from __future__ import annotations

import json
import typing
from functools import cache
from typing import TypeVar

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from daemon.errors import INVALID_PARAMETER, MALFORMED_REQUEST, ApiError
from daemon.http.request_models import Accepts, Body

B = TypeVar("B", bound=Body)
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
_RANK = {"extra_forbidden": 0, "missing": 1}


def parse_json(model: type[B], body: object, **context: object) -> B:
    """A decoded JSON body as `model`; ApiError 400 (code 9 for a body that is not an object, else 4)."""
    if not isinstance(body, dict):
        raise ApiError(MALFORMED_REQUEST, f"the request body must be a JSON object; got a JSON {_json_type(body)}")
    return _validate(model, body, _asks, _shown_json, "field", context)


def parse_form(model: type[B], fields: dict[str, list], noun: str = "form field", **context: object) -> B:
    """A form's fields (every value of each, in order) as `model`: a list field takes them all, another the last."""
    lists = _list_fields(model)
    body = {name: values if name in lists else values[-1] for name, values in fields.items()}
    return _validate(model, body, _asks_as_text, _shown_text, noun, context)


def parse_query(model: type[B], params: dict[str, str | list[str]]) -> B:
    """A query string's parameters (Falcon's req.params) as `model`; like a form's fields."""
    return parse_form(model, {name: value if isinstance(value, list) else [value] for name, value in params.items()},
                      noun="query parameter")


def names(model: type[Body]) -> frozenset[str]:
    """Every field name the model knows: its own, and the options it refuses as unsupported."""
    return frozenset(field.alias or name for name, field in model.model_fields.items()) | model.unsupported


def _validate(model: type[B], body: dict, asks, shown, noun: str, context: dict) -> B:
    fields = _fields(model)
    for name, value in body.items():
        if name in model.unsupported and asks(value):
            raise _invalid(name, f"{name} is not supported by this server; leave it out (supported: "
                                 f"{', '.join(fields)})")
    body = {name: value for name, value in body.items() if name not in model.unsupported
            and not (model.null_is_absent and value is None)}
    try:
        return model.model_validate(body, context=context)
    except ValidationError as exc:
        errors = sorted(exc.errors(include_url=False), key=lambda e: _RANK.get(e["type"], 2))
        raise _api_error(model, errors[0], shown, noun, fields) from None


def _api_error(model: type[Body], error: ErrorDetails, shown, noun: str, fields: tuple[str, ...]) -> ApiError:
    name = str(error["loc"][0]) if error["loc"] else None
    kind, value = error["type"], error["input"]
    if kind == "refused":
        return _invalid(error["ctx"]["param"] or name, error["ctx"]["message"])
    if kind == "value_error":  # a check written as a ValueError (the engine's word_boost rules) says it all
        return _invalid(name, str(error["ctx"]["error"]))
    if name is None:
        return _invalid(None, error["msg"])
    if kind == "extra_forbidden" and len(error["loc"]) > 1:  # inside an object field: name the object
        return _invalid(name, f"{name} must be {_accepts(model)[name]}; got an unknown field "
                              f"{str(error['loc'][-1])[:80]!r}")
    if kind == "extra_forbidden":
        quoted = repr(name) if len(name) <= 80 else repr(name[:80]) + "..."
        return _invalid(name, f"unknown {noun} {quoted}; the fields are {', '.join(fields)}")
    accepts = _accepts(model)[name]
    if kind == "missing":
        return _invalid(name, f"{name} is required: {accepts}")
    got = f"a JSON {_json_type(value)}" if kind.endswith("_type") and shown is _shown_json else shown(value)
    return _invalid(name, f"{name} must be {accepts}; got {got}")


def _invalid(param: str | None, description: str) -> ApiError:
    return ApiError(INVALID_PARAMETER, description, param=param)


@cache
def _fields(model: type[Body]) -> tuple[str, ...]:
    """The documented fields, as errors list them."""
    return tuple(sorted(model.model_json_schema()["properties"]))


@cache
def _list_fields(model: type[Body]) -> frozenset[str]:
    return frozenset(field.alias or name for name, field in model.model_fields.items()
                     if typing.get_origin(field.annotation) in (list, tuple))


@cache
def _accepts(model: type[Body]) -> dict[str, str]:
    """Each field's words for what it takes: its Accepts, else what its schema says."""
    words = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        marks = [m for m in _metadata(field.annotation) + list(field.metadata) if isinstance(m, Accepts)]
        words[key] = marks[0].words if marks else _described(_schema_of(model, key))
    return words


def _metadata(annotation: object) -> list:
    """The Annotated marks anywhere inside a type (Milliseconds | None holds Milliseconds')."""
    found = list(getattr(annotation, "__metadata__", ()))
    for arg in typing.get_args(annotation):
        found += _metadata(arg)
    return found


def _schema_of(model: type[Body], key: str) -> dict:
    """A field's schema without its null alternative."""
    schema = dict(model.model_json_schema(by_alias=True)["properties"].get(key, {}))
    options = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
    return {**schema, **options[0]} if len(options) == 1 else schema


def _described(schema: dict) -> str:
    kind = schema.get("type")
    if "enum" in schema or "const" in schema:
        return "one of " + ", ".join(str(v) for v in schema.get("enum", [schema.get("const")]) if v is not None)
    if kind == "boolean":
        return "true or false (a JSON boolean)"
    if kind in ("integer", "number"):
        noun = "a whole number" if kind == "integer" else "a number"
        low, high = schema.get("minimum"), schema.get("maximum")
        return f"{noun} from {low:g} to {high:g}" if low is not None and high is not None else noun
    if kind == "array":
        return "a list of " + _described(schema.get("items", {})).removeprefix("a ") + "s"
    limit = schema.get("maxLength")
    return "a string" + (f" of at most {limit} characters" if limit is not None else "")


def _asks(value: object) -> bool:
    """An option asks for something unless it is null, false, zero or empty."""
    return value not in (None, False, 0, "", [], {})


def _asks_as_text(value: object) -> bool:
    """A form's option asks for nothing when empty, false, 0, null or none (the SDK sends stream=false)."""
    return str(value).strip().lower() not in ("", "false", "0", "null", "none")


def _shown_text(value: object, limit: int = 80) -> str:
    """A form's or query's value as an error quotes it: its first characters."""
    text = str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _shown_json(value: object, limit: int = 80) -> str:
    """A client's value as an error quotes it: short, and never a failure of its own (deep nesting)."""
    if isinstance(value, (dict, list)):
        return f"a JSON {_json_type(value)}"
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value: object) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
