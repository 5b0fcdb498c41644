"""Typed policy parameters from the free-form `policy.parameters` mapping of the sidecar config.

Each policy declares a frozen dataclass of its parameters with defaults; `parse_parameters` builds it
from the mapping and refuses unknown keys and wrong types with `PolicyParameterError`, so a typo in an
InferencePool surfaces as a clear status condition instead of a silently ignored setting. Pure.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

from sloguard.sidecar.core.policy import PolicyParameterError

T = TypeVar("T")


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise PolicyParameterError(f"parameter {name!r} must be a boolean, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyParameterError(f"parameter {name!r} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PolicyParameterError(f"parameter {name!r} must be a finite number, got {value!r}")
        return float(value)
    raise PolicyParameterError(f"parameter {name!r} has an unsupported type {kind!r}")  # pragma: no cover


def parse_parameters(cls: type[T], raw: Mapping[str, Any]) -> T:
    """Build the dataclass `cls` from `raw`; a field's `metadata['min']` bounds it from below."""
    assert dataclasses.is_dataclass(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise PolicyParameterError(f"unknown parameters {unknown}; known: {sorted(fields)}")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        coerced = _coerce(key, hints[key], value)
        low = fields[key].metadata.get("min")
        if low is not None and coerced < low:
            raise PolicyParameterError(f"parameter {key!r} must be >= {low}, got {coerced!r}")
        values[key] = coerced
    return cls(**values)
