"""Drift detection: does the live object still carry every field the operator declared?

Pure. The apply adapter (`sloguard.operator.kube`) sends a server-side apply only when `declared_in`
says the live object differs, so a level-based resync of an unchanged pool writes nothing. Fields the
API server adds (defaults, status, managedFields) are ignored; lists must match element by element.
"""

from typing import Any


def declared_in(declared: Any, live: Any) -> bool:
    """True when every field of `declared` is present in `live` with the same value."""
    if isinstance(declared, dict):
        if not isinstance(live, dict):
            return False
        return all(key in live and declared_in(value, live[key]) for key, value in declared.items())
    if isinstance(declared, list):
        if not isinstance(live, list) or len(declared) != len(live):
            return False
        return all(declared_in(d, lv) for d, lv in zip(declared, live, strict=True))
    if isinstance(declared, bool) or isinstance(live, bool):
        return declared is live
    return bool(declared == live)
