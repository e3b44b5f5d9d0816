"""Kubernetes resource quantities: round recommendations up to values people write by hand.

A request of 0.2371 cores is as good as 240m but reads worse in a review and churns on every run;
rounding up (never down) keeps the recommendation on the safe side of the computed level.
"""

from __future__ import annotations

import math
import re

MIB = 1024**2
GIB = 1024**3
# Below one core, 10m steps (the scheduler's granularity is 1m, but 10m keeps diffs readable);
# from one core up, 50m steps.
CPU_STEP_SMALL_CORES = 0.010
CPU_STEP_LARGE_CORES = 0.050
# Below 1 GiB memory in 16 MiB steps, from 1 GiB up in 64 MiB steps.
MEMORY_STEP_SMALL_BYTES = 16 * MIB
MEMORY_STEP_LARGE_BYTES = 64 * MIB

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "Ki": 1024,
    "Mi": MIB,
    "Gi": GIB,
    "Ti": 1024**4,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def round_cpu_up(cores: float) -> float:
    """Round a CPU amount up to the next 10m (below one core) or 50m step."""
    step = CPU_STEP_SMALL_CORES if cores < 1.0 else CPU_STEP_LARGE_CORES
    # the small epsilon stops 0.25 becoming 0.26 through float noise
    return round(math.ceil(cores / step - 1e-9) * step, 3)


def round_memory_up(nbytes: float) -> float:
    """Round a memory amount up to the next 16 MiB (below 1 GiB) or 64 MiB step."""
    step = MEMORY_STEP_SMALL_BYTES if nbytes < GIB else MEMORY_STEP_LARGE_BYTES
    return float(math.ceil(nbytes / step - 1e-9) * step)


def format_cpu(cores: float | None) -> str | None:
    """`0.25` -> `250m`, `2.0` -> `2`; None stays None."""
    if cores is None or (isinstance(cores, float) and math.isnan(cores)):
        return None
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(nbytes: float | None) -> str | None:
    """`536870912` -> `512Mi`, `2147483648` -> `2Gi`; other values in Ki or bytes."""
    if nbytes is None or (isinstance(nbytes, float) and math.isnan(nbytes)):
        return None
    value = round(nbytes)
    for unit, size in (("Gi", GIB), ("Mi", MIB), ("Ki", 1024)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def parse_cpu(text: str) -> float:
    """`250m` -> 0.25, `2` -> 2.0 (cores)."""
    match = _CPU.match(text.strip())
    if not match:
        raise ValueError(f"not a CPU quantity: {text!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


def parse_memory(text: str) -> float:
    """`512Mi` -> 536870912.0, `1G` -> 1e9 (bytes)."""
    match = _MEMORY.match(text.strip())
    if not match:
        raise ValueError(f"not a memory quantity: {text!r}")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)]
