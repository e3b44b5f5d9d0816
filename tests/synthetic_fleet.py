"""Synthetic OpenMetrics series for tests and the extraction benchmark.

Shapes come from a real series (the caller passes one, e.g. NAB ELB request counts, MIT) so the
data has real bursts; every container gets a cumulative CPU counter with a reset, a working-set
gauge and requests/limits, at a chosen scrape interval. Deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_container_fleet(
    path: Path,
    containers: int,
    start_s: int,
    days: float,
    interval_s: int,
    shape: np.ndarray | None = None,
    seed: int = 7,
) -> int:
    """Write `containers` containers (4 series each) and return the number of samples written."""
    rng = np.random.default_rng(seed)
    n = int(days * 86400 // interval_s)
    ts = start_s + np.arange(n) * interval_s
    if shape is None:
        base = 1 + 0.5 * np.sin(2 * np.pi * (ts % 86400) / 86400)
    else:
        base = np.interp(np.linspace(0, len(shape) - 1, n), np.arange(len(shape)), shape)
        base = base / base.mean()
    written = 0
    with path.open("w") as out:
        families = [
            ("container_cpu_usage_seconds_total", "counter"),
            ("container_memory_working_set_bytes", "gauge"),
            ("kube_pod_container_resource_requests", "gauge"),
        ]
        for family, kind in families:
            name = family.removesuffix("_total") if kind == "counter" else family
            out.write(f"# TYPE {name} {kind}\n")
            for c in range(containers):
                pod = f"svc{c % 50}-7d9f8b6c5-{'bcdfg'[c % 5]}{'hjklm'[c // 5 % 5]}x2k"
                labels = f'namespace="ns{c % 7}",pod="{pod}",container="app{c}"'
                phase = rng.integers(0, n)
                level = rng.uniform(0.05, 2.0)
                load = np.roll(base, phase) * level * rng.uniform(0.9, 1.1, n)
                if family == "container_cpu_usage_seconds_total":
                    values = np.cumsum(load * interval_s)
                    reset_at = rng.integers(n // 3, 2 * n // 3)
                    values[reset_at:] -= values[reset_at - 1]  # a container restart
                    lines = [
                        f"{family}{{{labels}}} {v:.3f} {t}\n"
                        for t, v in zip(ts, values, strict=True)
                    ]
                elif family == "container_memory_working_set_bytes":
                    values = (2e8 + 1e8 * load).round()
                    lines = [
                        f"{family}{{{labels}}} {v:.0f} {t}\n"
                        for t, v in zip(ts, values, strict=True)
                    ]
                else:
                    req = f'{labels},resource="cpu",unit="core"'
                    lines = [f"{family}{{{req}}} {level * 1.5:.3f} {t}\n" for t in ts]
                out.writelines(lines)
                written += len(lines)
        out.write("# EOF\n")
    return written
