"""Kubernetes-style duration strings ("500ms", "2s", "1m30s", "1h") and their conversion to seconds.

The CRDs carry durations as strings so that a user's spec round-trips unchanged (GitOps); code converts
them to float seconds at the edge with `parse_duration_s`. The accepted grammar is the subset of Go's
`time.ParseDuration` that CEL's `duration()` also accepts, so the same string validates in pydantic, in
the CRD's OpenAPI pattern and in the CRD's CEL rules.
"""

import math
import re
from typing import Annotated

from pydantic import AfterValidator, Field

_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TERM = r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))"
DURATION_PATTERN = rf"^{_TERM}+$"
_TERM_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_FULL_RE = re.compile(DURATION_PATTERN)


def parse_duration_s(text: str) -> float:
    """Return the duration in seconds; raise ValueError with the accepted forms on anything else."""
    if not isinstance(text, str) or not _FULL_RE.match(text):
        raise ValueError(
            f"invalid duration {text!r}: expected a positive Go-style duration such as "
            "'500ms', '2s', '1m30s' or '1h' (units ms, s, m, h)"
        )
    return sum(float(number) * _UNIT_S[unit] for number, unit in _TERM_RE.findall(text))


def format_duration_s(seconds: float) -> str:
    """Render seconds as the shortest exact duration string ("500ms", "2s", "1m30s")."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration of {seconds!r} seconds")
    total_ms = round(seconds * 1000)
    if total_ms % 1000:
        return f"{total_ms}ms"
    total_s = total_ms // 1000
    hours, rest = divmod(total_s, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def _validate(text: str) -> str:
    parse_duration_s(text)
    return text


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_validate),
]
"""A duration string; the model keeps the string, `parse_duration_s` gives seconds."""


def _validate_positive(text: str) -> str:
    if parse_duration_s(text) <= 0:
        raise ValueError(f"duration {text!r} must be greater than zero")
    return text


PositiveDuration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "duration(self) > duration('0s')", "message": "must be greater than zero"}
            ]
        },
    ),
    AfterValidator(_validate),
    AfterValidator(_validate_positive),
]
"""A duration string that must be above zero (an interval: `0s` would spin)."""
