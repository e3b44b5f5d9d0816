"""The Numenta Anomaly Benchmark (NAB) scorer, reimplemented exactly and vectorised.

Why a reimplementation: NAB's own code (numenta/NAB, Python 2 era, MIT) scores one row at a
time and re-sorts the whole corpus for every detector run; a detector under development is scored
hundreds of times. This module follows NAB v1.1's `nab/sweeper.py` (per-row scaled-sigmoid
weights, one threshold per corpus and profile), `nab/util.py` (probationary period) and the
runner's normalisation, and reproduces the published per-file scores of the windowed Gaussian
detector to the 12 significant digits NAB wrote them with (tests/test_nab_scoring.py).

The rules, as NAB applies them:

- The first `min(floor(0.15 n), 0.15 * 5000)` rows of a file are probationary: detections there
  count for nothing, and those rows are not counted as TP/TN/FP/FN.
- A row is a detection when its anomaly score is `>= threshold`.
- Inside a window [s, r] of width w = r - s + 1 rows, a detection at row i is worth
  `tpWeight * S(-(r - i + 1) / w) / S(-1)` with `S(x) = 2 / (1 + exp(5x)) - 1` (S(x) = -1 for
  x >= 3): exactly tpWeight at the window's first row, 0.86 of it half-way, S(-1/w)/S(-1)
  (about 1.27/w, near 0 for NAB's wide windows) on its last row. Only the earliest detection
  of a window counts; later ones in the same window are free (they cost no FP).
- A window without a detection costs `-fnWeight`.
- A detection outside every window costs `fpWeight * S(|i - r| / (w - 1))` where [., r] is the
  last window before it (width w): almost nothing just after a window, -fpWeight from about one
  window width on; before the first window of a file it costs -fpWeight.
- The threshold is chosen once per detector and profile, for the whole corpus, maximising the
  summed score over the distinct score values (NAB's optimizer sweeps the same set).
- Normalised score = 100 (S - S_null) / (S_perfect - S_null); the null detector never fires
  (S_null = -fnWeight per window), the perfect one fires on each window's first row
  (S_perfect = tpWeight per window).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

PROBATION_FRACTION = 0.15  # nab/runner.py: probationaryPercent default
PROBATION_ROW_CAP = 0.15 * 5000  # nab/util.py getProbationPeriod: at most 750 rows
# Window and step that reproduce NAB's published windowedGaussian results (fitted: see
# windowed_gaussian; the detector's source today says 1000 and 1).
GAUSSIAN_WINDOW = 6400
GAUSSIAN_STEP = 100
GAUSSIAN_MIN_STD = 0.000001  # same file: a constant window's std is replaced by this


@dataclass(frozen=True)
class CostProfile:
    """One NAB application profile: how a detection in, after or without a window is weighted."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


# NAB config/profiles.json (tnWeight is unused by the scorer).
PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    "reward_low_FP_rate": CostProfile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22,
                                      fn_weight=1.0),
    "reward_low_FN_rate": CostProfile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11,
                                      fn_weight=2.0),
}


def load_profiles(root: Path) -> dict[str, CostProfile]:
    """The profiles in `root/config/profiles.json` (NAB's format), so a copy can be checked
    against `PROFILES` rather than trusted."""
    raw = json.loads((Path(root) / "config" / "profiles.json").read_text())
    return {
        name: CostProfile(name, tp_weight=float(p["CostMatrix"]["tpWeight"]),
                          fp_weight=float(p["CostMatrix"]["fpWeight"]),
                          fn_weight=float(p["CostMatrix"]["fnWeight"]))
        for name, p in raw.items()
    }


def scaled_sigmoid(position: np.ndarray | float) -> np.ndarray:
    """NAB's reward curve S(x) = 2 sigmoid(-5x) - 1, and -1 from x = 3 on (sweeper.py)."""
    x = np.asarray(position, dtype=float)
    with np.errstate(over="ignore"):
        curve = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x >= 3.0, -1.0, curve)


_MAX_TP = float(scaled_sigmoid(-1.0))  # a detection at a window's first row, before scaling


def probation_rows(n_rows: int) -> float:
    """Rows at the start of a file whose detections do not count (nab/util.py; a float, as
    NAB compares the row index with it)."""
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_ROW_CAP)


@dataclass(frozen=True)
class RowLayout:
    """What the scorer needs to know about each row of a file, independent of any detector:
    its window (-1 outside), its reward if it is a window's first detection, its (unweighted)
    cost if it is a false positive, and whether it is past the probationary period."""

    window_of_row: np.ndarray  # int64, -1 outside every window
    window_first_row: np.ndarray  # int64, per window: its first row
    tp_reward: np.ndarray  # S(-(r - i + 1) / w) / S(-1) inside windows, 0 outside
    fp_cost: np.ndarray  # S(|i - r| / (w - 1)) after a window, -1 before the first, 0 inside
    scorable: np.ndarray  # bool, row index >= probationary length
    scored_windows: np.ndarray  # bool per window: has at least one scorable row (NAB counts it)

    @property
    def n_windows(self) -> int:
        """Windows that count as FN when missed (NAB only sees windows with a scorable row)."""
        return int(self.scored_windows.sum())


def row_layout(timestamps: np.ndarray, windows: Sequence[tuple[np.datetime64, np.datetime64]]
               ) -> RowLayout:
    """Place the labelled windows (inclusive timestamp ranges) on the rows of one file.

    NAB's sweeper finds a window's edges by exact timestamp equality; here a window covers the
    rows whose timestamps fall inside it, which is the same on NAB's labels (their edges are
    row timestamps) and does not silently drop every later window when an edge is off-grid.
    """
    ts = np.asarray(timestamps)
    n = len(ts)
    window_of_row = np.full(n, -1, dtype=np.int64)
    tp_reward = np.zeros(n)
    fp_cost = np.full(n, -1.0)  # before the first window: S(3) = -1
    rows = np.arange(n)
    first_rows = []
    previous_end = -1
    for k, (start, end) in enumerate(windows):
        s = int(np.searchsorted(ts, np.datetime64(start), side="left"))
        r = int(np.searchsorted(ts, np.datetime64(end), side="right")) - 1
        if r < s:
            raise ValueError(f"window {start}..{end} covers no row")
        if s <= previous_end:
            raise ValueError(f"window {start}..{end} overlaps or precedes the previous one")
        previous_end = r
        width = r - s + 1
        window_of_row[s:r + 1] = k
        tp_reward[s:r + 1] = scaled_sigmoid(-(r - rows[s:r + 1] + 1) / width) / _MAX_TP
        fp_cost[s:r + 1] = 0.0
        after = rows[r + 1:]
        # NAB divides by width - 1 (a one-row window divides by zero there); inf -> S = -1.
        with np.errstate(divide="ignore", invalid="ignore"):
            position = np.abs(after - r) / float(width - 1)
        fp_cost[r + 1:] = scaled_sigmoid(position)
        first_rows.append(s)
    scorable = rows >= probation_rows(n)
    n_win = len(first_rows)
    scored = np.zeros(n_win, dtype=bool)
    inside = window_of_row >= 0
    scored[np.unique(window_of_row[inside & scorable])] = True
    return RowLayout(window_of_row, np.asarray(first_rows, dtype=np.int64), tp_reward, fp_cost,
                     scorable, scored)


@dataclass(frozen=True)
class NabFile:
    """One NAB data file: `name` as in NAB's labels ("realKnownCause/nyc_taxi.csv"), its rows
    and its anomaly windows (inclusive timestamp ranges)."""

    name: str
    timestamps: np.ndarray  # datetime64[s]
    values: np.ndarray  # float64
    windows: tuple[tuple[np.datetime64, np.datetime64], ...]

    @cached_property
    def layout(self) -> RowLayout:
        """The file's row layout, computed once (the optimiser uses it on every call)."""
        return row_layout(self.timestamps, self.windows)


def _parse_timestamps(texts: Sequence[str]) -> np.ndarray:
    """NAB timestamps ("2014-07-06 20:10:00", windows with ".000000") as datetime64[s]."""
    return np.array([t.strip().replace(" ", "T") for t in texts], dtype="datetime64[us]"
                    ).astype("datetime64[s]")


def read_csv_columns(path: Path) -> dict[str, list[str]]:
    """Columns of a (gzipped) CSV as lists of strings, header names as keys."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        columns: list[list[str]] = [[] for _ in header]
        for row in reader:
            for column, cell in zip(columns, row, strict=True):
                column.append(cell)
    return dict(zip(header, columns, strict=True))


def data_files(root: Path) -> dict[str, Path]:
    """Every data file under `root/data/<category>/<name>.csv[.gz]`, by NAB name."""
    return {
        f"{path.parent.name}/{path.name.removesuffix('.gz')}": path
        for path in sorted((Path(root) / "data").glob("*/*.csv*"))
    }


def load_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NAB data file's timestamps (datetime64[s]) and values (float64)."""
    columns = read_csv_columns(path)
    return _parse_timestamps(columns["timestamp"]), np.asarray(columns["value"], dtype=float)


def unlabelled_files(root: Path) -> list[str]:
    """Data files present without an entry in combined_windows.json: NAB cannot score them,
    so `load_corpus` leaves them out (the shared copy has one, realTweets/Twitter_volume_UPS,
    which the published per-file scores leave out too)."""
    labels = json.loads((Path(root) / "labels" / "combined_windows.json").read_text())
    return [name for name in data_files(root) if name not in labels]


def load_corpus(root: Path) -> list[NabFile]:
    """The labelled data files present under `root/data/`, with their windows from
    `root/labels/combined_windows.json` (label entries for absent files are ignored, and so
    are data files without labels: see `unlabelled_files`)."""
    labels = json.loads((Path(root) / "labels" / "combined_windows.json").read_text())
    files = []
    for name, path in data_files(root).items():
        if name not in labels:
            continue
        timestamps, values = load_series(path)
        windows = tuple(
            (_parse_timestamps([a])[0], _parse_timestamps([b])[0]) for a, b in labels[name]
        )
        files.append(NabFile(name=name, timestamps=timestamps, values=values, windows=windows))
    return files


@dataclass(frozen=True)
class FileScore:
    """A file's NAB score at one threshold and its row counts (probationary rows excluded from
    the counts; `total` is the file's row count, as in NAB's published `Total_Count`)."""

    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int


def _checked_scores(scores: np.ndarray, layout: RowLayout, name: str) -> np.ndarray:
    """Scores as float64, one per row, no NaN (NaN would be neither above nor below any
    threshold and would silently become its own threshold in the sweep)."""
    checked = np.asarray(scores, dtype=float)
    if checked.shape != layout.scorable.shape:
        raise ValueError(f"{name}: {len(checked)} scores for {len(layout.scorable)} rows")
    if np.isnan(checked).any():
        raise ValueError(f"{name}: anomaly scores contain NaN")
    return checked


def _score_with_layout(layout: RowLayout, scores: np.ndarray, threshold: float,
                       profile: CostProfile) -> tuple[FileScore, np.ndarray]:
    """Score one file; also return NAB's per-row S(t) column (each window's whole
    contribution on its first row, each false positive's cost on its own row)."""
    scores = _checked_scores(scores, layout, "file")
    inside = layout.window_of_row >= 0
    detected = (scores >= threshold) & layout.scorable
    false_alarm = detected & ~inside
    contributions = np.zeros(len(scores))
    contributions[false_alarm] = profile.fp_weight * layout.fp_cost[false_alarm]
    hit_rows = np.flatnonzero(detected & inside)
    hit_windows, first = np.unique(layout.window_of_row[hit_rows], return_index=True)
    window_value = np.where(layout.scored_windows, -profile.fn_weight, 0.0)
    window_value[hit_windows] = profile.tp_weight * layout.tp_reward[hit_rows[first]]
    contributions[layout.window_first_row] += window_value
    counts = dict(
        tp=int((detected & inside).sum()), fp=int(false_alarm.sum()),
        tn=int((~detected & ~inside & layout.scorable).sum()),
        fn=int((~detected & inside & layout.scorable).sum()),
    )
    score = float(contributions[false_alarm].sum() + window_value.sum())
    return FileScore(score=score, total=len(scores), **counts), contributions


def score_file(timestamps: np.ndarray, scores: np.ndarray,
               windows: Sequence[tuple[np.datetime64, np.datetime64]], threshold: float,
               profile: CostProfile) -> FileScore:
    """NAB's score of one file whose rows are detections when `scores >= threshold`."""
    return _score_with_layout(row_layout(timestamps, windows), scores, threshold, profile)[0]


def row_contributions(timestamps: np.ndarray, scores: np.ndarray,
                      windows: Sequence[tuple[np.datetime64, np.datetime64]], threshold: float,
                      profile: CostProfile) -> np.ndarray:
    """NAB's published `S(t)_<profile>` column: where each part of a file's score comes from
    (summing it gives `score_file(...).score`). Useful to see which alarms cost points."""
    return _score_with_layout(row_layout(timestamps, windows), scores, threshold, profile)[1]


@dataclass(frozen=True)
class Sweep:
    """Corpus score at every candidate threshold, highest threshold first. The first entry,
    threshold +inf, is the detector that never fires."""

    thresholds: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray


def sweep(files_with_scores: Sequence[tuple[NabFile, np.ndarray]], profile: CostProfile
          ) -> Sweep:
    """The summed corpus score for every distinct anomaly score used as the threshold.

    One sort of all scorable rows of the corpus, then cumulative sums: a false positive adds
    its cost once its score is reached; a window's value changes only when a row earlier than
    every row detected so far in that window is reached (the reward falls along the window, so
    the earliest detection is the best one), which a running minimum of row positions finds.
    O(N log N) for N rows, against NAB's sort plus a Python loop.
    """
    values, gains, window_ids, positions = [], [], [], []
    window_offset = 0
    row_offset = 0
    for nab_file, scores in files_with_scores:
        layout = nab_file.layout
        scores = _checked_scores(scores, layout, nab_file.name)
        keep = np.flatnonzero(layout.scorable)
        inside = layout.window_of_row[keep] >= 0
        values.append(scores[keep])
        gains.append(np.where(inside, profile.tp_weight * layout.tp_reward[keep],
                              profile.fp_weight * layout.fp_cost[keep]))
        window_ids.append(np.where(inside, layout.window_of_row[keep] + window_offset, -1))
        positions.append(keep + row_offset)
        window_offset += len(layout.window_first_row)
        row_offset += len(layout.scorable)
    n_windows = sum(f.layout.n_windows for f, _ in files_with_scores)
    value = np.concatenate(values) if values else np.zeros(0)
    gain = np.concatenate(gains) if gains else np.zeros(0)
    window_id = np.concatenate(window_ids) if window_ids else np.zeros(0, dtype=np.int64)
    position = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)

    order = np.argsort(-value, kind="stable")
    value, gain, window_id, position = (value[order], gain[order], window_id[order],
                                        position[order])
    inside = window_id >= 0
    delta = np.where(inside, 0.0, gain)

    # Window rows grouped by window, later windows first, each group in sweep order: windows
    # are disjoint, increasing row ranges, so a running minimum over the whole array restarts
    # at each group and gives the earliest row detected so far in the row's window.
    in_rows = np.flatnonzero(inside)
    grouped = in_rows[np.lexsort((in_rows, -window_id[in_rows]))]
    earliest = np.minimum.accumulate(position[grouped])
    reward_at_row = np.zeros(row_offset)
    reward_at_row[position[in_rows]] = gain[in_rows]
    best = reward_at_row[earliest]
    group_start = np.ones(len(grouped), dtype=bool)
    group_start[1:] = window_id[grouped][1:] != window_id[grouped][:-1]
    previous = np.empty(len(grouped))
    previous[1:] = best[:-1]
    previous[group_start] = -profile.fn_weight
    delta[grouped] = best - previous

    running = -n_windows * profile.fn_weight + np.cumsum(delta)
    last_of_value = np.ones(len(value), dtype=bool)
    last_of_value[:-1] = value[1:] != value[:-1]
    ends = np.flatnonzero(last_of_value)
    return Sweep(
        thresholds=np.concatenate([[np.inf], value[ends]]),
        scores=np.concatenate([[-n_windows * profile.fn_weight], running[ends]]),
        tp=np.concatenate([[0], np.cumsum(inside)[ends]]),
        fp=np.concatenate([[0], np.cumsum(~inside)[ends]]),
    )


@dataclass(frozen=True)
class Threshold:
    """The corpus-wide threshold NAB's optimiser picks and the summed score it gives."""

    threshold: float
    score: float


def optimise_threshold(files_with_scores: Sequence[tuple[NabFile, np.ndarray]],
                       profile: CostProfile) -> Threshold:
    """One threshold for the whole corpus maximising the summed score (NAB's optimizer; among
    equal scores the highest threshold, as NAB's stable sort keeps)."""
    result = sweep(files_with_scores, profile)
    best = int(np.argmax(result.scores))
    return Threshold(threshold=float(result.thresholds[best]), score=float(result.scores[best]))


def corpus_score(files_with_scores: Sequence[tuple[NabFile, np.ndarray]], threshold: float,
                 profile: CostProfile) -> dict[str, FileScore]:
    """Per-file scores at one threshold, keyed by file name."""
    return {
        f.name: _score_with_layout(f.layout, scores, threshold, profile)[0]
        for f, scores in files_with_scores
    }


@dataclass(frozen=True)
class ProfileResult:
    """A detector's corpus result for one profile: threshold, raw score, its null and perfect
    bounds and the normalised score (0 = never fires, 100 = every window at its start)."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalised(self) -> float:
        """NAB's reported number: 100 (raw - null) / (perfect - null)."""
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def profile_results(files_with_scores: Sequence[tuple[NabFile, np.ndarray]],
                    profiles: dict[str, CostProfile] | None = None,
                    thresholds: dict[str, float] | None = None) -> dict[str, ProfileResult]:
    """Per profile: optimise the corpus threshold (or use the given one) and normalise."""
    results = {}
    for name, profile in (profiles or PROFILES).items():
        n_windows = sum(f.layout.n_windows for f, _ in files_with_scores)
        if thresholds is None:
            best = optimise_threshold(files_with_scores, profile)
            threshold, raw = best.threshold, best.score
        else:
            threshold = thresholds[name]
            raw = sum(s.score for s in corpus_score(files_with_scores, threshold,
                                                    profile).values())
        results[name] = ProfileResult(
            profile=name, threshold=threshold, raw=raw,
            null=-n_windows * profile.fn_weight, perfect=n_windows * profile.tp_weight)
    return results


def normalised_scores(files_with_scores: Sequence[tuple[NabFile, np.ndarray]],
                      profiles: dict[str, CostProfile] | None = None,
                      thresholds: dict[str, float] | None = None) -> dict[str, float]:
    """NAB's normalised score per profile on the given corpus (thresholds optimised unless
    given): 0 for a detector that never fires, 100 for one that fires on each window's first
    row and nowhere else."""
    return {name: r.normalised
            for name, r in profile_results(files_with_scores, profiles, thresholds).items()}


def windowed_gaussian(values: np.ndarray, window: int = GAUSSIAN_WINDOW,
                      step: int = GAUSSIAN_STEP) -> np.ndarray:
    """NAB's windowedGaussian baseline: the score of a value is 1 - Q(|x - mean| / std) for
    the mean and (population) std of the detector's window of previous values; 1e-6 replaces
    a std of 0, the first row scores 0.

    The window fills up to `window` values, then moves forward by `step` values at a time
    (the statistics stay fixed in between). `window=6400, step=100` and an exact sqrt(2) in Q
    reproduce NAB's published anomaly_score column to its 12 digits; the detector's source as
    stored today reads `windowSize = 1000`, `stepSize = 1` and nupic's erfc(z / 1.4142),
    which differs from the published column by up to 0.5.
    The per-window np.mean / np.std calls are kept (rather than running sums) because they are
    what NAB computed: running sums differ in the last bits, and on constant stretches that
    turns a std of exactly 0 (replaced by 1e-6) into 1e-17 and a score of 0.5 into 0.68.
    The |x - mean| makes values below the mean score as high as values above it.
    """
    from scipy.special import erfc  # imported where used (no work at import time)

    if window < 1 or step < 1:
        raise ValueError("window and step must be positive")
    x = np.asarray(values, dtype=float)
    n = len(x)
    mean = np.zeros(n)
    std = np.ones(n)
    for i in range(1, min(n, window + 1)):  # filling: every previous value
        mean[i] = np.mean(x[:i])
        std[i] = np.std(x[:i])
    # Full: the window x[k*step : window + k*step] serves rows window + k*step ...
    # window + (k+1)*step - 1 (it moves once `step` new values have arrived).
    for first_row in range(window + step, n, step):
        past = x[first_row - window:first_row]
        mean[first_row:first_row + step] = np.mean(past)
        std[first_row:first_row + step] = np.std(past)
    if n > window:
        mean[window:min(n, window + step)] = mean[window]
        std[window:min(n, window + step)] = std[window]
    std[std == 0.0] = GAUSSIAN_MIN_STD
    scores = 1.0 - 0.5 * erfc(np.abs(x - mean) / std / math.sqrt(2.0))
    if n:
        scores[0] = 0.0
    return scores


def load_published_rows(root: Path, detector: str, nab_file: str) -> dict[str, list[str]]:
    """NAB's published per-row results of `detector` for one file (columns as strings):
    `root/results_<detector>/<category>/<detector>_<name>.csv.gz`."""
    category, name = nab_file.split("/")
    path = Path(root) / f"results_{detector}" / category / f"{detector}_{name}.gz"
    return read_csv_columns(path)


def load_published_file_scores(root: Path, detector: str, profile: str
                               ) -> dict[str, dict[str, float]]:
    """NAB's published per-file Threshold, Score, TP, TN, FP, FN, Total_Count of `detector`
    for `profile` (the Totals row, which covers all 58 files, is left out)."""
    path = Path(root) / f"results_{detector}" / f"{detector}_{profile}_scores.csv.gz"
    columns = read_csv_columns(path)
    fields = ("Threshold", "Score", "TP", "TN", "FP", "FN", "Total_Count")
    return {
        name: {f: float(columns[f][i]) for f in fields}
        for i, name in enumerate(columns["File"]) if name
    }
