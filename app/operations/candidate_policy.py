"""A candidate policy given as JSON (a file for `availability preview`, a request body for POST /policy/preview),
checked field by field against avro/PolicyChange.avsc, then by the engine's own policy rules.

The JSON is the Avro record as JSON: enums as their symbol strings, optional fields (`["null", T]`) as the value
or null, and fields with a default may be left out. The first problem is reported with its path, e.g.
`channels[1].share_bp: expected an integer, got "half"`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from app.engine import EventDecodeError, PolicyChange, event_from_record, validate
from app.errors import UserError
from app.wire.serialization import load_schema_library

_INTEGER_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class CandidatePolicyError(UserError):
    """The candidate is not a PolicyChange the service would accept; the message names the field and the fix."""


def parse_candidate(text: str | bytes, channels_with_topics: Iterable[str]) -> PolicyChange:
    """The PolicyChange of a JSON document, or CandidatePolicyError naming the first problem."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CandidatePolicyError(f"the policy is not JSON: {error}") from None
    schema = load_schema_library().expanded("PolicyChange")
    record = _checked(document, schema, "", {})
    try:
        change = event_from_record("PolicyChange", record)
    except (EventDecodeError, ValueError, TypeError, KeyError) as error:
        raise CandidatePolicyError(f"the policy cannot be read as a PolicyChange: {error}") from None
    reason = validate(change)
    if reason is not None:
        raise CandidatePolicyError(f"the policy breaks a rule of docs/RULES.md section 3 ({reason}): the service "
                                   "would refuse it")
    unknown = sorted({rule.channel for rule in change.channels} - set(channels_with_topics))
    if unknown:
        raise CandidatePolicyError(f"channels without a topic here: {', '.join(unknown)} (UNKNOWN_CHANNEL); "
                                   "the configured channels are AVAILABILITY_CHANNELS")
    return change


def _where(path: str) -> str:
    return path or "the policy"


def _checked(value, schema, path: str, named: dict):
    """`value` checked against `schema`; returns it with defaults filled in. `named`: full name -> definition."""
    if isinstance(schema, str):
        if schema in named:
            return _checked(value, named[schema], path, named)
        return _primitive(value, schema, path)
    if isinstance(schema, list):  # a union: null or one type, as every union of PolicyChange is
        if value is None and "null" in schema:
            return None
        others = [branch for branch in schema if branch != "null"]
        return _checked(value, others[0], path, named)
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        if not isinstance(value, dict):
            raise CandidatePolicyError(f"{_where(path)}: expected an object, got {json.dumps(value)[:40]}")
        fields = {field["name"]: field for field in schema["fields"]}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise CandidatePolicyError(f"{_where(path)}: unknown field {unknown[0]!r} (PolicyChange.avsc has "
                                       f"{', '.join(fields)})")
        record = {}
        for name, field in fields.items():
            inner = f"{path}.{name}" if path else name
            if name not in value:
                if "default" not in field:
                    raise CandidatePolicyError(f"{inner}: missing (required by PolicyChange.avsc)")
                record[name] = field["default"]
                continue
            record[name] = _checked(value[name], field["type"], inner, named)
        return record
    if kind == "enum":
        named[schema["name"]] = schema
        if value not in schema["symbols"]:
            raise CandidatePolicyError(f"{_where(path)}: {json.dumps(value)[:40]} is not one of "
                                       f"{', '.join(schema['symbols'])}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise CandidatePolicyError(f"{_where(path)}: expected a list, got {json.dumps(value)[:40]}")
        return [_checked(item, schema["items"], f"{path}[{index}]", named) for index, item in enumerate(value)]
    return _checked(value, kind, path, named)


def _primitive(value, kind: str, path: str):
    if kind in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[kind]
        if type(value) is not int:
            raise CandidatePolicyError(f"{_where(path)}: expected an integer, got {json.dumps(value)[:40]}")
        if not low <= value <= high:
            raise CandidatePolicyError(f"{_where(path)}: {value} is out of range for an Avro {kind}")
        return value
    expected = {"string": str, "boolean": bool, "null": type(None)}.get(kind)
    if expected is None or type(value) is not expected:
        raise CandidatePolicyError(f"{_where(path)}: expected {kind}, got {json.dumps(value)[:40]}")
    return value
