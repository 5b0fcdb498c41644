"""Drift detection: does the live object still carry what the operator last applied?

Pure. The apply adapter (`sloguard.operator.kube`) sends a server-side apply only when
`needs_apply` says so, so a level-based resync of an unchanged pool writes nothing. Two checks:

- the manifest's digest, stamped on the child as the annotation `APPLIED_DIGEST_ANNOTATION`, differs
  from the desired one: the pool spec changed (this also catches a *removed* field, which a
  "declared fields are present" check cannot see; server-side apply then prunes it);
- `declared_in(declared, live)` is false: someone edited or removed a field the operator declares.
  What the API server adds (defaults, status, managedFields) is ignored, and so is what it normalises:
  empty lists and maps it drops, quantities it rewrites (`1024Mi` reads back as `1Gi`, `8` as `"8"`).
"""

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

APPLIED_DIGEST_ANNOTATION = "sloguard.dev/applied-digest"
"""sha256 (first 16 hex digits) of the manifest the operator last applied to this child."""

QUANTITY_KEYS = frozenset({"requests", "limits"})
"""Maps whose values are resource quantities; `sizeLimit` is one too."""

_SUFFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


def quantity_value(raw: Any) -> Decimal | None:
    """The value of a Kubernetes quantity (`"1Gi"`, `"500m"`, `8`), or None when it is not one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return Decimal(str(raw))
    if not isinstance(raw, str):
        return None
    match = _QUANTITY.match(raw.strip())
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation:
        return None


def _empty(value: Any) -> bool:
    return value is None or value in ({}, [])


def _map_declared_in(declared: dict[str, Any], live: Any, quantity: bool) -> bool:
    if not isinstance(live, dict):
        return False
    for key, value in declared.items():
        if key not in live:
            if _empty(value):
                continue  # the API server drops empty lists and maps
            return False
        in_quantities = quantity or key in QUANTITY_KEYS or key == "sizeLimit"
        if not declared_in(value, live[key], quantity=in_quantities):
            return False
    return True


def _scalar_declared_in(declared: Any, live: Any, quantity: bool) -> bool:
    if isinstance(declared, bool) or isinstance(live, bool):
        return declared is live
    if declared == live:
        return True
    wanted = quantity_value(declared) if quantity else None
    return wanted is not None and wanted == quantity_value(live)


def declared_in(declared: Any, live: Any, *, quantity: bool = False) -> bool:
    """True when every field of `declared` is present in `live` with the same value (see module doc)."""
    if isinstance(declared, dict | list) and _empty(declared) and _empty(live):
        return True
    if isinstance(declared, dict):
        return _map_declared_in(declared, live, quantity)
    if isinstance(declared, list):
        if not isinstance(live, list) or len(declared) != len(live):
            return False
        return all(declared_in(d, lv) for d, lv in zip(declared, live, strict=True))
    return _scalar_declared_in(declared, live, quantity)


def manifest_digest(manifest: dict[str, Any]) -> str:
    """A stable digest of `manifest` without its own digest annotation."""
    md = dict(manifest.get("metadata") or {})
    annotations = {k: v for k, v in (md.get("annotations") or {}).items() if k != APPLIED_DIGEST_ANNOTATION}
    md["annotations"] = annotations
    canonical = json.dumps({**manifest, "metadata": md}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` with its digest stamped in `metadata.annotations`."""
    md = dict(manifest["metadata"])
    md["annotations"] = {
        **(md.get("annotations") or {}),
        APPLIED_DIGEST_ANNOTATION: manifest_digest(manifest),
    }
    return {**manifest, "metadata": md}


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """True when `desired` (already `with_digest`) must be applied over `live` (None: absent)."""
    if live is None:
        return True
    live_digest = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_DIGEST_ANNOTATION)
    wanted_digest = desired["metadata"]["annotations"][APPLIED_DIGEST_ANNOTATION]
    return live_digest != wanted_digest or not declared_in(desired, live)
