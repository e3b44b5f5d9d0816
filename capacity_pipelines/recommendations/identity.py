"""Stable identity of a recommendation and the fingerprint of its evidence.

The id hashes WHAT is recommended and WHERE (kind + target), never the numbers, so the same
action on the same target keeps its id from run to run while its figures move, and its review
and history follow it. The fingerprint hashes the evidence value, so a reviewer's decision can be
tied to the evidence it was made on.
"""

from __future__ import annotations

import hashlib
import math

ID_PREFIX = "rec-"
ID_HEX_DIGITS = 10  # 40 bits: a collision needs ~10^6 distinct actions, far above any fleet


def recommendation_id(kind: str, target: str) -> str:
    """`rec-` + the first 10 hex digits of SHA-256(kind, target)."""
    digest = hashlib.sha256(f"{kind}\x1f{target}".encode()).hexdigest()
    return ID_PREFIX + digest[:ID_HEX_DIGITS]


def evidence_fingerprint(kind: str, target: str, evidence_value: float | None) -> str:
    """SHA-256 prefix of kind, target and the evidence value at 3 significant digits."""
    value = (
        "none" if evidence_value is None or math.isnan(evidence_value) else f"{evidence_value:.3g}"
    )
    return hashlib.sha256(f"{kind}\x1f{target}\x1f{value}".encode()).hexdigest()[:12]


def materially_changed(before: float | None, after: float | None, threshold: float) -> bool:
    """True when the evidence value moved by more than `threshold` x its value at `before`.

    `before` is the value the decision was made on; from zero any move is material, and a
    value appearing or disappearing is a material change.
    """
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (before, after)]
    if all(missing):
        return False
    if any(missing):
        return True
    if before == 0:
        return after != 0
    return abs(after - before) / abs(before) > threshold
