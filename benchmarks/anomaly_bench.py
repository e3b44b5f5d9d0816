"""Anomaly detectors on the Numenta Anomaly Benchmark files in ../shared/data/nab.

Run from the repository root:

    nice .venv/bin/python benchmarks/anomaly_bench.py                       # every registered
    nice .venv/bin/python benchmarks/anomaly_bench.py --detector windowed_gaussian
    nice .venv/bin/python benchmarks/anomaly_bench.py --detector my.module:score_series
    nice .venv/bin/python benchmarks/anomaly_bench.py --out benchmarks/results/anomalies.md

A detector is `callable(values: np.ndarray, timestamps: np.ndarray[datetime64]) -> scores`,
one score in [0, 1] per row, computed causally (row i may only use rows <= i, as NAB's
detectors are streaming). Register one in `DETECTORS` or pass `module:function`.

Scored with `benchmarks/nab.py` (NAB's scorer reimplemented): per profile one threshold for the
whole set of files, normalised 0 (never fires) .. 100 (every window at its first row). The
shared copy holds 34 of NAB's 58 files, so the numbers are NOT NAB's scoreboard: the published
full-corpus scores are printed beside them for orientation only. The report also records how
closely the scorer reproduces NAB's published per-file results (windowedGaussian detector).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import nab  # noqa: E402
from capacity_pipelines.anomalies.detector import THRESHOLD  # noqa: E402

NAB_ROOT = REPO.parent / "shared" / "data" / "nab"
PUBLISHED_DETECTOR = "windowedGaussian"  # the detector whose per-row results are shared

Detector = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _null(values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Never fires (NAB's normalisation floor)."""
    return np.zeros(len(values))


def _random(values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Uniform noise, seeded per file length: the floor any detector must clear (NAB's own
    `random` detector differs in seed and was scored on all 58 files)."""
    return np.random.default_rng(len(values)).uniform(size=len(values))


def _windowed_gaussian(values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """NAB's windowedGaussian with the settings that reproduce its published results."""
    return nab.windowed_gaussian(values)


def _capacity(values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """The project's detector (`capacity_pipelines.anomalies.detector`), default settings."""
    from capacity_pipelines.anomalies.detector import score_series

    return score_series(np.asarray(timestamps, dtype="datetime64[us]"),
                        np.asarray(values, dtype=float)).score


def _capacity_no_floor(values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """The project's detector without the record floor (`least_record=0`): what the floor
    costs on NAB, side by side."""
    from capacity_pipelines.anomalies.detector import DetectorSettings, score_series

    return score_series(np.asarray(timestamps, dtype="datetime64[us]"),
                        np.asarray(values, dtype=float), DetectorSettings(least_record=0.0)).score


DETECTORS: dict[str, Detector] = {
    "capacity": _capacity,
    "capacity_no_floor": _capacity_no_floor,
    "windowed_gaussian": _windowed_gaussian,
    "random": _random,
    "null": _null,
}


def resolve_detector(name: str) -> Detector:
    """A registered name, or `package.module:function` imported on demand."""
    if name in DETECTORS:
        return DETECTORS[name]
    if ":" not in name:
        raise SystemExit(f"unknown detector {name!r}: one of {sorted(DETECTORS)} or "
                         "module:function")
    module_name, function_name = name.split(":", 1)
    return getattr(importlib.import_module(module_name), function_name)


def run_detector(detector: Detector, corpus: list[nab.NabFile]
                 ) -> tuple[list[tuple[nab.NabFile, np.ndarray]], float]:
    """Scores of every file and the detector's wall time (scoring excluded)."""
    files_with_scores = []
    seconds = 0.0
    for f in corpus:
        started = time.perf_counter()
        scores = np.asarray(detector(f.values.copy(), f.timestamps.copy()), dtype=float)
        seconds += time.perf_counter() - started
        if scores.shape != f.values.shape:
            raise ValueError(f"{f.name}: {scores.shape} scores for {f.values.shape} rows")
        files_with_scores.append((f, scores))
    return files_with_scores, seconds


def scorer_agreement(root: Path, corpus: list[nab.NabFile]) -> dict[str, float]:
    """Largest absolute differences between this scorer and NAB's published results of the
    windowedGaussian detector: per-file Score (and count mismatches), per-row S(t), and the
    reimplemented detector's anomaly_score."""
    worst = {"file Score": 0.0, "row S(t)": 0.0, "anomaly_score": 0.0, "count mismatches": 0}
    rows = {f.name: nab.load_published_rows(root, PUBLISHED_DETECTOR, f.name) for f in corpus}
    for profile_name, profile in nab.PROFILES.items():
        published = nab.load_published_file_scores(root, PUBLISHED_DETECTOR, profile_name)
        for f in corpus:
            row = published[f.name]
            scores = np.asarray(rows[f.name]["anomaly_score"], dtype=float)
            result = nab.score_file(f.timestamps, scores, f.windows, row["Threshold"], profile)
            worst["file Score"] = max(worst["file Score"], abs(result.score - row["Score"]))
            counts = (result.tp, result.tn, result.fp, result.fn, result.total)
            expected = (row["TP"], row["TN"], row["FP"], row["FN"], row["Total_Count"])
            worst["count mismatches"] += int(counts != expected)
            s_t = np.asarray(rows[f.name][f"S(t)_{profile_name}"], dtype=float)
            contributions = nab.row_contributions(f.timestamps, scores, f.windows,
                                                  row["Threshold"], profile)
            worst["row S(t)"] = max(worst["row S(t)"],
                                    float(np.max(np.abs(contributions - s_t))))
    for f in corpus:
        published = np.asarray(rows[f.name]["anomaly_score"], dtype=float)
        worst["anomaly_score"] = max(worst["anomaly_score"], float(
            np.max(np.abs(nab.windowed_gaussian(f.values) - published))))
    return worst


def published_on_these_files(root: Path, corpus: list[nab.NabFile]
                             ) -> dict[str, nab.ProfileResult]:
    """NAB's own windowedGaussian scores on these files at NAB's own (58-file) thresholds:
    the bridge between the published scoreboard and this subset."""
    files = [(f, np.asarray(nab.load_published_rows(root, PUBLISHED_DETECTOR, f.name)
                            ["anomaly_score"], dtype=float)) for f in corpus]
    thresholds = {
        name: next(iter(nab.load_published_file_scores(root, PUBLISHED_DETECTOR,
                                                       name).values()))["Threshold"]
        for name in nab.PROFILES
    }
    return nab.profile_results(files, thresholds=thresholds)


def at_fixed_threshold(files_with_scores: list[tuple[nab.NabFile, np.ndarray]],
                       threshold: float) -> dict[str, float]:
    """What a user of `capacity anomalies` sees at its fixed threshold, past NAB's
    probationary rows: windows with a flag, flags outside every window per 10,000 points on
    the labelled files, flags per 10,000 points on the files with no anomaly at all, and NAB's
    standard score at that threshold."""
    caught = windows = false_flags = labelled_points = quiet_flags = quiet_points = 0
    for f, scores in files_with_scores:
        layout = f.layout
        flags = (scores >= threshold) & layout.scorable
        if layout.n_windows == 0:
            quiet_flags += int(flags.sum())
            quiet_points += int(layout.scorable.sum())
            continue
        inside = layout.window_of_row >= 0
        windows += layout.n_windows
        caught += len(set(layout.window_of_row[flags & inside].tolist()))
        false_flags += int((flags & ~inside).sum())
        labelled_points += int((layout.scorable & ~inside).sum())
    standard = nab.profile_results(files_with_scores, thresholds=dict.fromkeys(nab.PROFILES,
                                                                             threshold))
    return {
        "caught": caught, "windows": windows,
        "false per 10k": 1e4 * false_flags / max(labelled_points, 1),
        "quiet per 10k": 1e4 * quiet_flags / max(quiet_points, 1),
        "standard": standard["standard"].normalised,
    }


def noise_alarms(detector: Detector, threshold: float, series: int = 10) -> int:
    """Flags raised on `series` seeded fortnights of anomaly-free 5-minute data (plain noise, and
    noise on a daily cycle), from their first point: what a new series costs its on-call."""
    points = 14 * 288
    timestamps = np.datetime64("2026-01-01T00:00") + np.arange(points) * np.timedelta64(5, "m")
    cycle = 40 * np.sin(2 * np.pi * np.arange(points) / 288)
    flags = 0
    for seed in range(series):
        noise = np.random.default_rng(seed).normal(0, 3, points)
        for values in (100 + noise, 100 + cycle + noise):
            flags += int((np.asarray(detector(values, timestamps)) >= threshold).sum())
    return flags


def report(root: Path, names: list[str]) -> str:
    """The markdown report for the given detectors."""
    corpus = nab.load_corpus(root)
    n_points = sum(len(f.values) for f in corpus)
    n_windows = sum(f.layout.n_windows for f in corpus)
    profiles = list(nab.PROFILES)
    lines = [
        "# Anomaly detectors on NAB (shared subset)",
        "",
        f"{len(corpus)} labelled NAB files, {n_points:,} points, {n_windows} anomaly windows "
        f"(unlabelled, left out: {', '.join(nab.unlabelled_files(root)) or 'none'}).",
        "Normalised NAB score per profile, threshold optimised once over these files "
        "(0 = never fires, 100 = every window detected at its first row, no false alarm).",
        "",
        "| detector | " + " | ".join(profiles) + " | thresholds | points/s |",
        "|---|" + "---:|" * len(profiles) + "---|---:|",
    ]
    fixed = {}
    for name in names:
        files_with_scores, seconds = run_detector(resolve_detector(name), corpus)
        results = nab.profile_results(files_with_scores)
        speed = f"{n_points / seconds:,.0f}" if seconds > 0 else "inf"
        lines.append(
            f"| {name} | " + " | ".join(f"{results[p].normalised:.1f}" for p in profiles)
            + " | " + ", ".join(f"{results[p].threshold:.6g}" for p in profiles)
            + f" | {speed} |")
        if name.startswith("capacity"):
            fixed[name] = at_fixed_threshold(files_with_scores, THRESHOLD)
            fixed[name]["noise"] = noise_alarms(resolve_detector(name), THRESHOLD)
    bridge = published_on_these_files(root, corpus)
    lines.append(
        f"| {PUBLISHED_DETECTOR} (NAB's published scores and 58-file thresholds) | "
        + " | ".join(f"{bridge[p].normalised:.1f}" for p in profiles)
        + " | " + ", ".join(f"{bridge[p].threshold:.6g}" for p in profiles) + " | |")

    if fixed:
        lines += [
            "",
            f"## At `capacity anomalies`' own fixed threshold ({THRESHOLD}), past NAB's "
            "probationary rows",
            "",
            "| detector | windows with a flag | flags outside windows per 10k points | "
            "flags per 10k points, files without anomalies | NAB standard at this threshold | "
            "flags on 20 seeded anomaly-free fortnights (10 plain noise, 10 daily cycle) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, seen in fixed.items():
            lines.append(
                f"| {name} | {seen['caught']} of {seen['windows']} | "
                f"{seen['false per 10k']:.1f} | {seen['quiet per 10k']:.1f} | "
                f"{seen['standard']:.1f} | {seen['noise']} |")
    published = json.loads((root / "results_final_results.json").read_text())
    lines += [
        "",
        "## Published NAB scoreboard (published, full 58-file corpus, not comparable "
        "one-to-one)",
        "",
        "| detector | " + " | ".join(profiles) + " |",
        "|---|" + "---:|" * len(profiles),
    ]
    ranked = sorted(published.items(), key=lambda item: -item[1]["standard"])
    for name, scores in ranked:
        lines.append(f"| {name} | " + " | ".join(f"{scores[p]:.1f}" for p in profiles) + " |")

    started = time.perf_counter()
    agreement = scorer_agreement(root, corpus)
    check_seconds = time.perf_counter() - started
    timing_files = [(f, nab.windowed_gaussian(f.values)) for f in corpus]
    started = time.perf_counter()
    for profile in nab.PROFILES.values():
        nab.optimise_threshold(timing_files, profile)
    optimise_ms = (time.perf_counter() - started) / len(nab.PROFILES) * 1000
    lines += [
        "",
        "## Scorer agreement with NAB's published windowedGaussian results",
        "",
        f"- per-file Score, 3 profiles x {len(corpus)} files: max |diff| "
        f"{agreement['file Score']:.1e}; TP/TN/FP/FN/Total_Count mismatches: "
        f"{agreement['count mismatches']}",
        f"- per-row S(t) columns: max |diff| {agreement['row S(t)']:.1e}",
        f"- reimplemented windowedGaussian vs published anomaly_score: max |diff| "
        f"{agreement['anomaly_score']:.1e} (NAB printed 12 significant digits)",
        f"- threshold optimisation over all {n_points:,} points: {optimise_ms:.0f} ms per "
        f"profile (continuous scores); agreement check {check_seconds:.1f} s",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, print the report (and write it with --out)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", action="append",
                        help=f"repeatable; one of {sorted(DETECTORS)} or module:function "
                             "(default: all registered)")
    parser.add_argument("--data", type=Path, default=NAB_ROOT, help="NAB folder")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is absent (NAB's data lives beside the repository)")
    text = report(args.data, args.detector or list(DETECTORS))
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
