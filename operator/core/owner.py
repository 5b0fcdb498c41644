"""Owner references: every child of a pool points back to it, so the garbage collector removes it.

Pure; `children.build_children` stamps the reference built here on each manifest.
"""

from typing import Any

from sloguard.operator.core.names import API_VERSION


def owner_reference(*, kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller reference that also blocks the owner's foreground deletion until the child is gone."""
    if not uid:
        raise ValueError(f"{kind} {name} has no uid; cannot own children")
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
