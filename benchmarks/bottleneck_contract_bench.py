"""The bottleneck outlook scored through its file contract, as a user (or a reviewer with series the
project does not have) would score it: `capacity bottlenecks --backtest --labels-out`, then
the targets and every baseline computed from the labels file alone.

Run from the repository root:

    nice .venv/bin/python benchmarks/bottleneck_contract_bench.py [--speed] [--only SOURCE ...]

Per real source in `../shared/data` (research-only files are converted into a temporary folder
that is removed afterwards, never kept): U is built (series_id, ts UTC, CPU and memory used and
their capacities; a source without one of them leaves it null), the command is run as a
subprocess and timed, and O is scored against targets from L (the class of the first labelled
hour in [origin, origin + horizon), only where the whole horizon lies in the data), side by
side with, on the same origins:
- persistence over the last 24 h and over the last 7 d (the class labelled in most hours of
  the window, ties to the earlier class, else none; it states 0.5 on the class it names and 0.5
  on none, as the outlook's own persistence candidate does);
- climatology: each series' own frequencies of the target on origins whose horizon ended by the
  start of the origin's UTC day; before it has any, its hourly label frequencies up to that day.
Macro-F1 of the most likely class (the contract has no other way to name one) over the classes
present in truth or prediction; multi-class Brier; 90 % bootstrap intervals over series.

`--speed`: the issue's scale case, 60 series x 2 months of 5-minute data, built from the six
Bitbrains VMs (each VM's month twice in a row, ten copies with their CPU and memory use scaled
by 0.6 to 3 so that some saturate), timed end to end through the command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bottleneck_bench import _macro_f1, _seed  # noqa: E402

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_CLASSES, HORIZONS  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
METHODS = ("outlook", "persistence_24h", "persistence_7d", "climatology")
BASELINES = METHODS[1:]
LABELS = {
    "outlook": "outlook",
    "persistence_24h": "persistence 24 h",
    "persistence_7d": "persistence 7 d",
    "climatology": "climatology",
}
STATED = 0.5
BOOTSTRAP_DRAWS = 2000
PERSISTENCE_HOURS = {"persistence_24h": 24, "persistence_7d": 168}
SPEED_SERIES, SPEED_COPIES = 60, 10


def _u(frame: pl.DataFrame) -> pl.DataFrame:
    """The contract's columns in its types (absent resources null)."""
    for column in ("cpu_cores", "cpu_capacity_cores", "memory_bytes", "memory_capacity_bytes"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    return frame.select(
        pl.col("series_id").cast(pl.Utf8),
        pl.col("ts").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")),
        *(
            pl.col(c).cast(pl.Float64)
            for c in ("cpu_cores", "cpu_capacity_cores", "memory_bytes", "memory_capacity_bytes")
        ),
    ).sort("series_id", "ts")


def bitbrains_usage() -> pl.DataFrame:
    f = pl.read_csv(DATA / "bitbrains_rnd_6vms_2013-07.csv.gz")
    return _u(
        f.select(
            pl.col("vm_id").alias("series_id"),
            pl.from_epoch("timestamp_s").alias("ts"),
            (pl.col("cpu_usage_mhz") / (pl.col("cpu_capacity_mhz") / pl.col("cpu_cores"))).alias(
                "cpu_cores"
            ),
            pl.col("cpu_cores").alias("cpu_capacity_cores"),
            (pl.col("mem_usage_kb") * 1024.0).alias("memory_bytes"),
            (pl.col("mem_capacity_kb") * 1024.0).alias("memory_capacity_bytes"),
        )
    )


def percent_usage(frame: pl.DataFrame, cpu: str | None, memory: str | None) -> pl.DataFrame:
    """A source in percent of capacity: capacity 100, usage the percentage."""
    columns = [pl.col("series_id"), pl.col("ts")]
    if cpu:
        columns += [pl.col(cpu).alias("cpu_cores"), pl.lit(100.0).alias("cpu_capacity_cores")]
    if memory:
        columns += [
            pl.col(memory).alias("memory_bytes"),
            pl.lit(100.0).alias("memory_capacity_bytes"),
        ]
    return _u(frame.select(columns))


def real_sources() -> dict[str, pl.DataFrame]:
    """Every real source in the contract's shape."""
    nab = pl.concat(
        pl.read_csv(path, try_parse_dates=True).select(
            pl.lit(path.stem).alias("series_id"), pl.col("timestamp").alias("ts"), "value"
        )
        for path in sorted((DATA / "nab_aws").glob("*cpu_utilization_*.csv"))
    )
    alibaba = pl.read_csv(
        DATA / "alibaba_v2018_machine_usage_3machines.csv", infer_schema_length=100_000
    ).with_columns(
        pl.col("machine_id").alias("series_id"),
        (pl.datetime(2018, 1, 1) + pl.duration(seconds=pl.col("time_stamp"))).alias("ts"),
    )
    genai = pl.read_csv(DATA / "gentd26_pod_memory_util_10pods.csv").with_columns(
        pl.col("container_ip").str.slice(0, 8).alias("series_id"),
        pl.from_epoch(pl.col("timestamp_anon").cast(pl.Int64)).alias("ts"),
        (pl.col("value") * 100).alias("value"),
    )
    return {
        "bitbrains": bitbrains_usage(),
        "alibaba2018": percent_usage(alibaba, "cpu_util_percent", "mem_util_percent"),
        "nab": percent_usage(nab, "value", None),
        "gentd26": percent_usage(genai, None, "value"),
    }


def speed_usage() -> pl.DataFrame:
    """60 series x 2 months of 5-minute rows from the six Bitbrains VMs (see the docstring)."""
    base = bitbrains_usage()
    span = base["ts"].max() - base["ts"].min() + timedelta(minutes=5)
    factors = np.linspace(0.6, 3.0, SPEED_COPIES)
    parts = []
    for copy, factor in enumerate(factors):
        for month in range(2):
            parts.append(
                base.with_columns(
                    (pl.col("series_id") + f"-x{copy}").alias("series_id"),
                    pl.col("ts") + span * month,
                    pl.col("cpu_cores") * factor,
                    pl.col("memory_bytes") * min(factor, 1.4),
                )
            )
    return pl.concat(parts).sort("series_id", "ts")


def run_command(usage: pl.DataFrame, folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, float]:
    """`capacity bottlenecks --backtest` on `usage`: (O, L, seconds)."""
    paths = {name: folder / f"{name}.parquet" for name in ("usage", "outlook", "labels")}
    usage.write_parquet(paths["usage"])
    started = time.perf_counter()
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "capacity"),
            "bottlenecks",
            "--usage", str(paths["usage"]),
            "--out", str(paths["outlook"]),
            "--backtest",
            "--labels-out", str(paths["labels"]),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"capacity bottlenecks failed ({run.returncode}): {run.stderr[-2000:]}")
    return pl.read_parquet(paths["outlook"]), pl.read_parquet(paths["labels"]), seconds


def _series_scores(
    hours: np.ndarray, classes: np.ndarray, asked: dict[np.datetime64, np.ndarray], h: int
) -> list[dict]:
    """Targets and baselines of one series at its asked origins (L's hours are its grid)."""
    k = len(BOTTLENECK_CLASSES)
    index = {t: i for i, t in enumerate(hours)}
    none = BOTTLENECK_CLASSES.index("none")
    y = np.array([BOTTLENECK_CLASSES.index(c) for c in classes])
    labelled = np.flatnonzero(y != none)
    # target at position i: the first labelled hour in [i, i + h)
    n = len(y)
    targets = np.full(n, -1)
    nxt = np.searchsorted(labelled, np.arange(n))
    for i in range(n - h + 1):
        j = nxt[i]
        targets[i] = y[labelled[j]] if j < len(labelled) and labelled[j] < i + h else none
    rows = []
    for origin, outlook in asked.items():
        i = index.get(origin)
        if i is None or targets[i] < 0:
            continue
        row = {"origin": origin, "target": int(targets[i]), "outlook": outlook}
        for method, window in PERSISTENCE_HOURS.items():
            counts = np.bincount(y[max(0, i - window) : i], minlength=k)
            counts[none] = 0
            p = np.zeros(k)
            if counts.max() > 0:
                p[int(counts.argmax())] = STATED
                p[none] = 1 - STATED
            else:
                p[none] = 1.0
            row[method] = p
        day = origin.astype("datetime64[D]").astype(hours.dtype)
        ended = np.flatnonzero((targets >= 0) & (hours + np.timedelta64(h, "h") <= day))
        freq = (
            np.bincount(targets[ended], minlength=k)
            if len(ended)
            else np.bincount(y[hours < day], minlength=k)
        ).astype(float)
        row["climatology"] = freq / freq.sum() if freq.sum() else np.eye(k)[none]
        rows.append(row)
    return rows


def scored_frame(outlook: pl.DataFrame, labels: pl.DataFrame, source: str) -> dict[str, list]:
    """Per horizon: one record per scored origin (series, target, each method's probabilities)."""
    k = len(BOTTLENECK_CLASSES)
    out: dict[str, list] = {}
    for horizon, h in HORIZONS.items():
        wide = outlook.filter(pl.col("horizon") == horizon).pivot(
            on="class", index=["series_id", "origin"], values="probability"
        )
        records = []
        for (series,), own in labels.sort("hour").group_by("series_id", maintain_order=True):
            mine = wide.filter(pl.col("series_id") == series)
            asked = {}
            for row in mine.iter_rows(named=True):
                p = np.zeros(k)
                for j, c in enumerate(BOTTLENECK_CLASSES):
                    p[j] = row.get(c) or 0.0
                asked[np.datetime64(row["origin"].replace(tzinfo=None), "us")] = p
            hours = own["hour"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]")
            for r in _series_scores(hours, own["class"].to_numpy(), asked, h):
                records.append({"source": source, "series": series, **r})
        out[horizon] = records
    return out


def score(records: list[dict], name: str) -> dict:
    """Macro-F1 and Brier per method with a 90 % bootstrap interval over series."""
    k = len(BOTTLENECK_CLASSES)
    series = sorted({(r["source"], r["series"]) for r in records})
    where = {s: i for i, s in enumerate(series)}
    entry = {"series": len(series), "origins": len(records), "methods": {}}
    rng = np.random.default_rng(_seed(name))
    strata = np.array([s[0] for s in series])
    weights = np.zeros((BOOTSTRAP_DRAWS, len(series)))
    for source in sorted(set(strata)):
        members = np.flatnonzero(strata == source)
        draws = rng.choice(members, size=(BOOTSTRAP_DRAWS, len(members)))
        for b in range(BOOTSTRAP_DRAWS):
            np.add.at(weights[b], draws[b], 1)
    for method in METHODS:
        confusion = np.zeros((len(series), k, k))
        brier, count = np.zeros(len(series)), np.zeros(len(series))
        for r in records:
            s = where[(r["source"], r["series"])]
            p = r[method]
            confusion[s, r["target"], int(p.argmax())] += 1
            brier[s] += ((p - np.eye(k)[r["target"]]) ** 2).sum()
            count[s] += 1
        boot_f1 = _macro_f1(np.einsum("bs,skl->bkl", weights, confusion))
        boot_brier = (weights @ brier) / np.maximum(weights @ count, 1)
        entry["methods"][method] = {
            "macro_f1": float(_macro_f1(confusion.sum(axis=0))),
            "macro_f1_90": [float(np.quantile(boot_f1, q)) for q in (0.05, 0.95)],
            "brier": float(brier.sum() / max(count.sum(), 1)),
            "brier_90": [float(np.quantile(boot_brier, q)) for q in (0.05, 0.95)],
        }
    return entry


def _cell(m: dict, metric: str) -> str:
    lo, hi = m[f"{metric}_90"]
    return f"{m[metric]:.3f} [{lo:.3f}, {hi:.3f}]"


def table_lines(scores: dict[str, dict[str, dict]]) -> list[str]:
    lines = []
    for horizon in HORIZONS:
        for metric, title, verdict in (
            ("macro_f1", "macro-F1 (higher is better)", "outlook >= best baseline"),
            ("brier", "multi-class Brier (lower is better)", "outlook <= climatology"),
        ):
            head = ["source", "series", "origins", *(LABELS[m] for m in METHODS), verdict]
            lines += [f"#### {horizon}: {title}", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]  # fmt: skip
            for source, entry in scores[horizon].items():
                m = entry["methods"]
                if metric == "macro_f1":
                    best = max(m[b]["macro_f1"] for b in BASELINES)
                    met = m["outlook"]["macro_f1"] >= best - 1e-9
                else:
                    met = m["outlook"]["brier"] <= m["climatology"]["brier"] + 1e-9
                row = [source, str(entry["series"]), str(entry["origins"])]
                row += [_cell(m[x], metric) for x in METHODS]
                row.append("yes" if met else "**no**")
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="sources to score (default: all)")
    parser.add_argument("--speed", action="store_true", help="also time 60 series x 2 months")
    parser.add_argument("--json-out", type=Path, help="write the scores as JSON here")
    parser.add_argument("--out", type=Path, help="write the Markdown results here")
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is missing: the benchmark reads the real series there")
    scores: dict[str, dict[str, dict]] = {h: {} for h in HORIZONS}
    pooled: dict[str, list] = {h: [] for h in HORIZONS}
    timings = []
    with tempfile.TemporaryDirectory(prefix="bottleneck-contract-") as tmp:
        sources = real_sources()
        for name, usage in sources.items():
            if args.only and name not in args.only:
                continue
            folder = Path(tmp) / name
            folder.mkdir()
            outlook, labels, seconds = run_command(usage, folder)
            timings.append((name, usage["series_id"].n_unique(), usage.height, seconds))
            for horizon, records in scored_frame(outlook, labels, name).items():
                if records:
                    scores[horizon][name] = score(records, name)
                    pooled[horizon] += records
        for horizon, records in pooled.items():
            if len({r["source"] for r in records}) > 1:
                scores[horizon]["pooled (real sources)"] = score(records, "pooled")
        if args.speed:
            folder = Path(tmp) / "speed"
            folder.mkdir()
            usage = speed_usage()
            _, _, seconds = run_command(usage, folder)
            timings.append(("speed: Bitbrains x10, 2 months", usage["series_id"].n_unique(),
                            usage.height, seconds))  # fmt: skip
    command = " ".join(["nice .venv/bin/python benchmarks/bottleneck_contract_bench.py",
                        *sys.argv[1:]])  # fmt: skip
    lines = [
        "# Bottleneck outlook through its file contract",
        "",
        f"Command (repository root): `{command}`",
        "",
        f"Code at `{_commit()}`, {datetime.now():%Y-%m-%d %H:%M} UTC, "
        f"load {os.getloadavg()[0]:.1f}.",
        "",
        "Each source's usage file (series_id, ts, CPU and memory used and their capacities) "
        "goes through `capacity bottlenecks --backtest --labels-out`; targets (the class of "
        "the first labelled hour in [origin, origin + horizon), whole horizon in the data) and "
        "every baseline come from the labels file alone, on the outlook's origins. Persistence "
        "over 24 h / 7 d names the class labelled in most hours of the window (else none) at "
        "0.5; climatology is each series' own target frequencies on origins whose horizon "
        "ended by the origin's UTC midnight (before any, its hourly label frequencies). "
        "Macro-F1 of the most likely class over the classes present in truth or prediction; "
        "multi-class Brier; [90 % bootstrap interval over series]. The speed row times the "
        "whole command.",
        "",
        *table_lines(scores),
        "| run | series | rows | seconds |",
        "|---|---|---|---|",
        *(f"| {n} | {s} | {r:,} | {sec:.1f} |" for n, s, r, sec in timings),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.json_out:
        args.json_out.write_text(json.dumps({"scores": scores, "timings": timings}, indent=1))
    return 0


def _commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                         text=True, check=False)  # fmt: skip
    return run.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
