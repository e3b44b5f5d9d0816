"""The NAB scorer (`benchmarks/nab.py`) against NAB's own published numbers, plus small cases.

Synthetic tests (no data needed) pin each scoring rule with numbers worked out by hand from
NAB's definitions. The published-results tests read `../shared/data/nab` (NAB's data, labels,
profiles and the windowedGaussian detector's published per-row and per-file results) and skip
when it is absent. Published numbers were written with 12 significant digits, hence the
tolerances below (a few units in the 12th digit).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import nab

NAB_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
SCORE_TOLERANCE = 1e-10  # per-file Score: sums of ~10 numbers printed with 12 digits
ANOMALY_SCORE_TOLERANCE = 1e-12  # anomaly_score in [0, 1] printed with 12 digits
STANDARD = nab.PROFILES["standard"]
MINUTE = np.timedelta64(60, "s")


def _timestamps(n: int) -> np.ndarray:
    return np.datetime64("2024-01-01T00:00:00") + MINUTE * np.arange(n)


def _window(ts: np.ndarray, first: int, last: int) -> tuple[np.datetime64, np.datetime64]:
    return (ts[first], ts[last])


# 100 rows -> probation is floor(15.0) = 15 rows; one window on rows 40..49 (width 10).
N_ROWS = 100
TS = _timestamps(N_ROWS)
WINDOW = [_window(TS, 40, 49)]


def _alarms(*rows: int) -> np.ndarray:
    scores = np.zeros(N_ROWS)
    scores[list(rows)] = 1.0
    return scores


def _sigmoid_reward(x: float) -> float:
    """NAB's scaled sigmoid, written out independently of the module."""
    return -1.0 if x >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def test_detection_at_window_start_scores_exactly_tp_weight() -> None:
    result = nab.score_file(TS, _alarms(40), WINDOW, 0.5, STANDARD)
    assert result.score == pytest.approx(1.0, abs=1e-12)
    assert (result.tp, result.fp, result.fn) == (1, 0, 9)


def test_later_detection_in_window_pays_less() -> None:
    # Row 45: position -(49 - 45 + 1) / 10 = -0.5 -> S(-0.5) / S(-1) = 0.8598...
    result = nab.score_file(TS, _alarms(45), WINDOW, 0.5, STANDARD)
    assert result.score == pytest.approx(_sigmoid_reward(-0.5) / _sigmoid_reward(-1.0))
    last_row = nab.score_file(TS, _alarms(49), WINDOW, 0.5, STANDARD)
    # S(-1/w) / S(-1) = 0.248 for w = 10 (and near 0 for NAB's wide windows): still beats a
    # miss (-1) by a full point.
    assert last_row.score == pytest.approx(_sigmoid_reward(-0.1) / _sigmoid_reward(-1.0))
    assert 0.2 < last_row.score < 0.3


def test_only_the_first_detection_in_a_window_counts() -> None:
    first_only = nab.score_file(TS, _alarms(42), WINDOW, 0.5, STANDARD)
    many = nab.score_file(TS, _alarms(42, 43, 47, 49), WINDOW, 0.5, STANDARD)
    assert many.score == first_only.score
    assert many.tp == 4  # row counts still see every detected row


def test_missed_window_costs_fn_weight() -> None:
    for profile in nab.PROFILES.values():
        result = nab.score_file(TS, np.zeros(N_ROWS), WINDOW, 0.5, profile)
        assert result.score == -profile.fn_weight
        assert (result.tp, result.fp, result.fn, result.tn) == (0, 0, 10, 75)


def test_false_positive_well_after_the_window_costs_fp_weight() -> None:
    # Row 90 is (90 - 49) / (10 - 1) = 4.6 window widths past the end: S = -1.
    for profile in nab.PROFILES.values():
        result = nab.score_file(TS, _alarms(40, 90), WINDOW, 0.5, profile)
        assert result.score == pytest.approx(profile.tp_weight - profile.fp_weight)


def test_false_positive_before_any_window_costs_fp_weight() -> None:
    result = nab.score_file(TS, _alarms(20, 40), WINDOW, 0.5, STANDARD)
    assert result.score == pytest.approx(1.0 - STANDARD.fp_weight)


def test_false_positive_right_after_the_window_is_cheap() -> None:
    # Row 50: position 1 / 9 -> S = 2 / (1 + e^(5/9)) - 1 = -0.27; times fpWeight 0.11.
    result = nab.score_file(TS, _alarms(40, 50), WINDOW, 0.5, STANDARD)
    assert result.score == pytest.approx(1.0 + 0.11 * _sigmoid_reward(1 / 9))
    assert -0.04 < result.score - 1.0 < -0.02


def test_detection_in_probationary_period_counts_for_nothing() -> None:
    probation = nab.score_file(TS, _alarms(3, 14), WINDOW, 0.5, STANDARD)
    assert probation.score == -1.0  # only the missed window
    assert probation.fp == 0 and probation.tn + probation.fn == N_ROWS - 15
    just_after = nab.score_file(TS, _alarms(15), WINDOW, 0.5, STANDARD)
    assert just_after.score == pytest.approx(-1.0 - STANDARD.fp_weight)


def test_probation_is_capped_at_750_rows() -> None:
    assert nab.probation_rows(100) == 15
    assert nab.probation_rows(4032) == 604
    assert nab.probation_rows(22695) == 750


def test_detection_is_score_at_or_above_threshold() -> None:
    scores = np.zeros(N_ROWS)
    scores[40] = 0.7
    assert nab.score_file(TS, scores, WINDOW, 0.7, STANDARD).tp == 1
    assert nab.score_file(TS, scores, WINDOW, 0.7000001, STANDARD).tp == 0


def test_row_contributions_put_each_window_on_its_first_row() -> None:
    contributions = nab.row_contributions(TS, _alarms(45, 90), WINDOW, 0.5, STANDARD)
    assert contributions[40] == pytest.approx(_sigmoid_reward(-0.5) / _sigmoid_reward(-1.0))
    assert contributions[90] == pytest.approx(-0.11)
    assert np.count_nonzero(contributions) == 2
    assert contributions.sum() == pytest.approx(
        nab.score_file(TS, _alarms(45, 90), WINDOW, 0.5, STANDARD).score)


def test_nan_scores_are_refused() -> None:
    scores = np.zeros(N_ROWS)
    scores[50] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nab.score_file(TS, scores, WINDOW, 0.5, STANDARD)


def _synthetic_corpus(seed: int) -> list[tuple[nab.NabFile, np.ndarray]]:
    """Three files with random windows and coarse random scores (many ties)."""
    rng = np.random.default_rng(seed)
    corpus = []
    for k, n in enumerate((300, 500, 1200)):
        ts = _timestamps(n)
        starts = sorted(rng.choice(np.arange(200, n - 40, 40), size=2, replace=False))
        windows = tuple(_window(ts, s, s + int(rng.integers(1, 30))) for s in starts)
        values = rng.normal(size=n)
        scores = np.round(rng.uniform(size=n), 2)
        corpus.append((nab.NabFile(f"synthetic/f{k}.csv", ts, values, windows), scores))
    return corpus


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_equals_scoring_each_threshold_directly(seed: int) -> None:
    corpus = _synthetic_corpus(seed)
    for profile in nab.PROFILES.values():
        result = nab.sweep(corpus, profile)
        assert result.thresholds[0] == np.inf
        assert np.all(np.diff(result.thresholds) < 0)
        for threshold, score, tp, fp in zip(result.thresholds, result.scores, result.tp,
                                            result.fp, strict=True):
            per_file = nab.corpus_score(corpus, threshold, profile).values()
            assert score == pytest.approx(sum(s.score for s in per_file), abs=1e-9)
            assert tp == sum(s.tp for s in per_file)
            assert fp == sum(s.fp for s in per_file)
        best = nab.optimise_threshold(corpus, profile)
        assert best.score == pytest.approx(result.scores.max())


def test_null_and_perfect_detectors_normalise_to_0_and_100() -> None:
    corpus = _synthetic_corpus(3)
    null = [(f, np.zeros(len(f.values))) for f, _ in corpus]
    perfect = []
    for f, _ in corpus:
        scores = np.zeros(len(f.values))
        scores[f.layout.window_first_row] = 1.0
        perfect.append((f, scores))
    for name in nab.PROFILES:
        assert nab.normalised_scores(null)[name] == pytest.approx(0.0, abs=1e-12)
        assert nab.normalised_scores(perfect)[name] == pytest.approx(100.0, abs=1e-9)


def test_windowed_gaussian_small_cases() -> None:
    # Constant history: std 0 -> 1e-6, so the same value scores 0.5 and any change ~1.
    scores = nab.windowed_gaussian(np.array([5.0, 5.0, 5.0, 6.0]))
    assert scores[0] == 0.0
    assert scores[1] == scores[2] == 0.5
    assert scores[3] == 1.0
    # One sigma away after a symmetric history: 1 - Q(1), above or below alike.
    history = np.array([-1.0, 1.0] * 10)
    above = nab.windowed_gaussian(np.append(history, 1.0))[-1]
    below = nab.windowed_gaussian(np.append(history, -1.0))[-1]
    assert above == pytest.approx(0.841344746068543)
    assert below == pytest.approx(above)


def test_windowed_gaussian_window_moves_in_steps() -> None:
    values = np.arange(12, dtype=float)
    moving = nab.windowed_gaussian(values, window=4, step=2)
    # Rows 4 and 5 see values 0..3; rows 6 and 7 see 2..5; rows 8 and 9 see 4..7.
    for row, past in ((4, values[0:4]), (5, values[0:4]), (6, values[2:6]), (9, values[4:8])):
        z = abs(values[row] - past.mean()) / past.std()
        assert moving[row] == pytest.approx(1 - 0.5 * math.erfc(z / math.sqrt(2)))


# ---------------------------------------------------------------- published NAB results


@pytest.fixture(scope="module")
def nab_root() -> Path:
    if not NAB_DATA.is_dir():
        pytest.skip(f"{NAB_DATA} is absent (NAB's data and published results live beside the "
                    "repository only)")
    return NAB_DATA


@pytest.fixture(scope="module")
def corpus(nab_root: Path) -> list[nab.NabFile]:
    return nab.load_corpus(nab_root)


@pytest.fixture(scope="module")
def published_rows(nab_root: Path, corpus: list[nab.NabFile]) -> dict[str, dict[str, list]]:
    return {f.name: nab.load_published_rows(nab_root, "windowedGaussian", f.name)
            for f in corpus}


def _published_scores(rows: dict[str, list[str]]) -> np.ndarray:
    return np.asarray(rows["anomaly_score"], dtype=float)


@pytest.mark.research_data
def test_shared_corpus_is_what_nab_scores(nab_root: Path, corpus: list[nab.NabFile]) -> None:
    assert nab.load_profiles(nab_root) == nab.PROFILES
    published = nab.load_published_file_scores(nab_root, "windowedGaussian", "standard")
    assert sorted(f.name for f in corpus) == sorted(published)
    assert nab.unlabelled_files(nab_root) == ["realTweets/Twitter_volume_UPS.csv"]
    for f in corpus:
        assert f.layout.n_windows == len(f.windows)  # no window inside the probation


@pytest.mark.research_data
def test_windowed_gaussian_reproduces_published_anomaly_scores(nab_root: Path) -> None:
    """(a) every data file, the unlabelled one included."""
    worst = 0.0
    for name, path in nab.data_files(nab_root).items():
        _, values = nab.load_series(path)
        published = _published_scores(nab.load_published_rows(nab_root, "windowedGaussian",
                                                               name))
        mine = nab.windowed_gaussian(values)
        assert mine.shape == published.shape, name
        worst = max(worst, float(np.max(np.abs(mine - published))))
    assert worst <= ANOMALY_SCORE_TOLERANCE


@pytest.mark.parametrize("profile_name", list(nab.PROFILES))
@pytest.mark.research_data
def test_scorer_reproduces_published_file_scores(
    nab_root: Path, corpus: list[nab.NabFile], published_rows: dict, profile_name: str
) -> None:
    """(b) Score, TP, TN, FP, FN, Total_Count and the per-row S(t) column of every file."""
    profile = nab.PROFILES[profile_name]
    published = nab.load_published_file_scores(nab_root, "windowedGaussian", profile_name)
    for f in corpus:
        row = published[f.name]
        scores = _published_scores(published_rows[f.name])
        result = nab.score_file(f.timestamps, scores, f.windows, row["Threshold"], profile)
        assert result.score == pytest.approx(row["Score"], abs=SCORE_TOLERANCE), f.name
        assert (result.tp, result.tn, result.fp, result.fn, result.total) == (
            row["TP"], row["TN"], row["FP"], row["FN"], row["Total_Count"]), f.name
        contributions = nab.row_contributions(f.timestamps, scores, f.windows,
                                              row["Threshold"], profile)
        s_t = np.asarray(published_rows[f.name][f"S(t)_{profile_name}"], dtype=float)
        np.testing.assert_allclose(contributions, s_t, rtol=0, atol=ANOMALY_SCORE_TOLERANCE,
                                   err_msg=f.name)


@pytest.mark.parametrize("profile_name", list(nab.PROFILES))
@pytest.mark.research_data
def test_optimiser_does_at_least_as_well_as_published_threshold(
    nab_root: Path, corpus: list[nab.NabFile], published_rows: dict, profile_name: str
) -> None:
    """(c) NAB chose its threshold on all 58 files; on these 34 ours must not do worse."""
    profile = nab.PROFILES[profile_name]
    published = nab.load_published_file_scores(nab_root, "windowedGaussian", profile_name)
    (published_threshold,) = {row["Threshold"] for row in published.values()}
    files = [(f, _published_scores(published_rows[f.name])) for f in corpus]
    at_published = sum(row["Score"] for row in published.values())
    best = nab.optimise_threshold(files, profile)
    assert best.score >= at_published - SCORE_TOLERANCE * len(corpus)
    # the sweep's own value at the published threshold is the published corpus total
    curve = nab.sweep(files, profile)
    (at,) = np.flatnonzero(curve.thresholds == published_threshold)
    assert curve.scores[at] == pytest.approx(at_published, abs=SCORE_TOLERANCE * len(corpus))


@pytest.mark.research_data
def test_null_and_perfect_normalise_to_0_and_100_on_the_corpus(
    corpus: list[nab.NabFile],
) -> None:
    """(d)"""
    null = [(f, np.zeros(len(f.values))) for f in corpus]
    perfect = []
    for f in corpus:
        scores = np.zeros(len(f.values))
        scores[f.layout.window_first_row] = 1.0
        perfect.append((f, scores))
    for name, value in nab.normalised_scores(null).items():
        assert value == pytest.approx(0.0, abs=1e-12), name
    for name, value in nab.normalised_scores(perfect).items():
        assert value == pytest.approx(100.0, abs=1e-9), name


@pytest.mark.research_data
def test_anomaly_bench_reports_every_detector_and_the_agreement(nab_root: Path) -> None:
    from benchmarks import anomaly_bench

    detector = anomaly_bench.resolve_detector("benchmarks.nab:windowed_gaussian")
    assert detector is nab.windowed_gaussian
    text = anomaly_bench.report(nab_root, ["null"])
    assert "| null | 0.0 | 0.0 | 0.0 |" in text
    assert "published, full 58-file corpus, not comparable one-to-one" in text
    assert "TP/TN/FP/FN/Total_Count mismatches: 0" in text
