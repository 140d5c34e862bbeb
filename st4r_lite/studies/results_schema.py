"""The shape of an ablation's ``results.json``, checked before anything reads it (``report``, ``--check``).

A results.json may come from someone else (a shared folder, a download), so the report treats it as untrusted:
:func:`validate_results` checks every key the report reads (types, required keys, every row present in the
summary) and raises one :class:`~st4r_lite.errors.InputError` that names the first wrong entry by its path, e.g.
``results.json: runs[3].seed must be an integer, got 'x'``. Strings are still escaped where they reach HTML;
the schema only guarantees that the numbers are numbers, so no text can hide in them.

The schema is written as plain values: a Python type (``str``, ``int``, ``float`` = any real number, ``bool``),
``None`` inside a tuple for "or null", a ``list`` of one schema (every item), a ``dict`` of key -> schema (an
``Optional`` key may be missing), or ``MapOf(schema)`` for a dict with free keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from st4r_lite.errors import InputError

__all__ = ["RESULTS_SCHEMA", "MapOf", "Optional", "validate_results"]


@dataclass(frozen=True)
class Optional:
    """A dict entry that may be missing (when present it must match ``schema``)."""

    schema: object


@dataclass(frozen=True)
class MapOf:
    """A dict with any string keys, each value matching ``schema``."""

    schema: object


NUMBER = (float, None)  # a real number or null (a metric that could not be computed)
STAT = {"mean": NUMBER, "std_seeds": Optional(NUMBER), "n": Optional(int)}
PAIRED = {"mean_diff": NUMBER, "ci_low": Optional(NUMBER), "ci_high": Optional(NUMBER), "n": Optional(int)}

RESULTS_SCHEMA = {
    "command": str,
    "model": str,
    "wall_time_s": float,
    "hardware": {"cpu": Optional((str, None)), "torch_threads": Optional((int, None)),   # runtime.hardware_info
                 "processor": Optional((str, None)), "cpu_threads": Optional((int, None))},  # recorded before it
    "config": {"seeds": [int], "notes": Optional([str])},
    "sequences": [str],
    "rows": [str],
    "summary": MapOf(MapOf(STAT)),
    "runs": [{"row": str, "sequence": str, "seed": int, "metrics": MapOf(NUMBER), "loss": Optional([float])}],
    "paired": Optional((MapOf(MapOf(PAIRED)), None)),
    "ci_method": Optional(str),
}


def _type_ok(value, kind) -> bool:
    if kind is None:
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", None: "null"}
    if isinstance(kind, tuple):
        return " or ".join(_describe(k) for k in kind)
    if isinstance(kind, list):
        return "a list"
    if isinstance(kind, (dict, MapOf)):
        return "an object"
    return names.get(kind, str(kind))


def _check(value, schema, where: str) -> None:
    if isinstance(schema, tuple):  # any of
        errors = []
        for option in schema:
            try:
                _check(value, option, where)
                return
            except InputError as err:
                errors.append(err)
        if value is not None and len(errors) == len(schema):
            structured = [o for o in schema if isinstance(o, (list, dict, MapOf)) and _type_ok(value, _shape(o))]
            if structured:  # the right kind of container with a wrong entry: report that entry
                _check(value, structured[0], where)
        raise InputError(f"{where} must be {_describe(schema)}, got {_short(value)}")
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise InputError(f"{where} must be a list, got {_short(value)}")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
        return
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            raise InputError(f"{where} must be an object, got {_short(value)}")
        for key, item in value.items():
            _check(item, schema.schema, f"{where}[{key!r}]")
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise InputError(f"{where} must be an object, got {_short(value)}")
        for key, sub in schema.items():
            if key not in value:
                if isinstance(sub, Optional):
                    continue
                raise InputError(f"{where} is missing the key {key!r}")
            _check(value[key], sub.schema if isinstance(sub, Optional) else sub, f"{where}.{key}")
        return
    if not _type_ok(value, schema):
        raise InputError(f"{where} must be {_describe(schema)}, got {_short(value)}")
    if schema is float and not math.isfinite(float(value)) and where.endswith("wall_time_s"):
        raise InputError(f"{where} must be a finite number, got {value}")


def _shape(schema) -> type:
    return list if isinstance(schema, list) else dict


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_results(doc, name: str = "results.json") -> dict:
    """Check ``doc`` against :data:`RESULTS_SCHEMA` (and every row has a summary); returns it unchanged.

    Raises InputError naming the first wrong entry, e.g. ``results.json: config.seeds[0] must be an integer``."""
    try:
        _check(doc, RESULTS_SCHEMA, "")
        if not doc["config"]["seeds"]:
            raise InputError("config.seeds is empty; an ablation runs at least one seed")
        missing = [r for r in doc["rows"] if r not in doc["summary"]]
        if missing:
            raise InputError(f".summary has no entry for the row(s) {', '.join(map(repr, missing))}")
    except InputError as err:
        where = str(err).lstrip(".").strip()
        if where.startswith(("must", "is missing")):
            where = f"the top level {where}"
        raise InputError(f"{name}: {where} (not a results.json written by `st4r-lite "
                         "ablation`, or edited by hand)") from None
    return doc
