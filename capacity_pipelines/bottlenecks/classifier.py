"""Which bottleneck comes next: a small LightGBM multi-class model, or rules when history is thin.

The model learns, per horizon, the class of the first labelled window after an origin hour from
features known at that hour (`features.py`). It is kept small (few shallow trees, one thread,
fixed seeds) so the daily asset stays fast and two runs give the same numbers. Most hours are
quiet, so the raw `none` probability is then calibrated (isotonic regression) on the latest
fifth of the training origins, which the trees did not see: "no bottleneck at 0.9" should be
right nine times in ten. Where the history holds too few labelled episodes to learn from,
`rules_predict` gives the fallback outlook from recurrence and the memory trend;
`persistence_predict` (what saturated in the last day comes back) is the third candidate the
outlook may choose when it did best on the latest training origins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from capacity_pipelines.bottlenecks.features import feature_columns
from capacity_pipelines.bottlenecks.labels import MEMORY_LIMIT_UTIL
from capacity_pipelines.bottlenecks.signals import KEY
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_CLASSES

if TYPE_CHECKING:  # LightGBM and scikit-learn are imported where used: they cost seconds to
    # import, and every process that loads the Dagster definitions would pay for them.
    import lightgbm as lgb
    from sklearn.isotonic import IsotonicRegression

SEED = 20260928
LGBM_PARAMS = dict(
    n_estimators=80,  # small: a few thousand origins, the asset's budget is seconds
    learning_rate=0.08,
    num_leaves=15,
    min_child_samples=10,
    subsample=1.0,
    colsample_bytree=0.8,
    class_weight="balanced",  # episodes are rare; without it the trees only learn `none`
    random_state=SEED,
    n_jobs=1,
    deterministic=True,
    force_row_wise=True,
    verbose=-1,
)
MIN_TRAIN_ORIGINS = 72  # three days of hourly origins for one service, at the least
MIN_CLASS_ORIGINS = 6  # origins per class for the trees to learn it at all
MIN_EPISODE_CLASSES = 1  # besides `none`: with no episode at all there is nothing to learn
CALIBRATION_SHARE = 0.2  # latest fifth of the training origins calibrates `none`
RULE_PROBABILITY = 0.5  # our choice: a rule's projection alone is no better than a coin flip
RECURRENCE_SHARE = 0.5  # a class recurs within the horizon if half the last week's blocks had it


def _matrix(features: pl.DataFrame, columns: list[str]) -> np.ndarray:
    present = [c if c in features.columns else None for c in columns]
    out = np.full((features.height, len(columns)), np.nan)
    for i, c in enumerate(present):
        if c is not None:
            out[:, i] = features[c].cast(pl.Float64).to_numpy()
    return out


@dataclass
class BottleneckClassifier:
    """LightGBM multi-class over `BOTTLENECK_CLASSES` with a calibrated `none`."""

    columns: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    model: lgb.LGBMClassifier | None = None
    calibrator: IsotonicRegression | None = None
    notes: list[str] = field(default_factory=list)

    def fit(self, train: pl.DataFrame) -> BottleneckClassifier:
        """Train on origins with a known target, oldest first; calibrate `none` on the latest."""
        train = train.filter(pl.col("target").is_not_null()).sort("origin")
        self.columns = feature_columns(train)
        counts = dict(train.group_by("target").len().iter_rows())
        self.classes = [c for c in BOTTLENECK_CLASSES if counts.get(c, 0) > 0]
        if "none" not in self.classes:
            self.classes.append("none")
        # The latest fifth of each service's origins: services may not share one calendar.
        position = pl.col("origin").rank("ordinal").over(KEY) / pl.len().over(KEY)
        late = train.with_columns((position > 1 - CALIBRATION_SHARE).alias("late"))
        fit_part = late.filter(~pl.col("late"))
        calib = late.filter(pl.col("late"))
        if fit_part.select(pl.col("target").n_unique()).item() < 2:
            fit_part, calib = train, train.clear()
        self.model = self._trees(fit_part)
        self.calibrator = None
        if calib.height and calib.select(pl.col("target").n_unique()).item() >= 2:
            from sklearn.isotonic import IsotonicRegression

            raw = self._raw(calib)[:, self.classes.index("none")]
            self.calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                raw, (calib["target"] == "none").to_numpy().astype(float)
            )
        else:
            self.notes.append("`none` not calibrated: the latest origins hold one class only")
        return self

    def _trees(self, frame: pl.DataFrame) -> lgb.LGBMClassifier:
        import lightgbm as lgb

        y = np.array([self.classes.index(c) for c in frame["target"].to_list()])
        # Multi-class softmax from three classes on; two classes train a binary model.
        model = lgb.LGBMClassifier(**LGBM_PARAMS)
        return model.fit(_matrix(frame, self.columns), y)

    def _raw(self, frame: pl.DataFrame) -> np.ndarray:
        assert self.model is not None, "fit() first"
        proba = self.model.predict_proba(_matrix(frame, self.columns))
        full = np.zeros((frame.height, len(self.classes)))
        full[:, self.model.classes_] = proba
        return full

    def predict_proba(self, frame: pl.DataFrame) -> pl.DataFrame:
        """One probability column per class in `BOTTLENECK_CLASSES` (0 for unseen classes)."""
        raw = self._raw(frame)
        none = self.classes.index("none")
        if self.calibrator is not None:
            p_none = self.calibrator.predict(raw[:, none])
            others = raw.copy()
            others[:, none] = 0.0
            total = others.sum(axis=1)
            scale = np.where(total > 0, (1 - p_none) / np.where(total > 0, total, 1), 0.0)
            raw = others * scale[:, None]
            raw[:, none] = np.where(total > 0, p_none, 1.0)
        raw = raw / raw.sum(axis=1, keepdims=True)
        return pl.DataFrame(
            {
                c: raw[:, self.classes.index(c)] if c in self.classes else np.zeros(frame.height)
                for c in BOTTLENECK_CLASSES
            }
        )


def trainable(train: pl.DataFrame) -> tuple[bool, str]:
    """Whether the labelled history is enough for the model, and if not, why."""
    known = train.filter(pl.col("target").is_not_null())
    if known.height < MIN_TRAIN_ORIGINS:
        return False, f"{known.height} origins with a known outcome (< {MIN_TRAIN_ORIGINS})"
    counts = dict(known.group_by("target").len().iter_rows())
    episodes = [c for c, n in counts.items() if c != "none" and n >= MIN_CLASS_ORIGINS]
    if len(episodes) < MIN_EPISODE_CLASSES or counts.get("none", 0) < MIN_CLASS_ORIGINS:
        return False, (
            f"too few labelled episodes to learn from ({counts}); at least "
            f"{MIN_CLASS_ORIGINS} origins of `none` and of one bottleneck class are needed"
        )
    return True, ""


def rules_predict(frame: pl.DataFrame, recurrence: float | None = None) -> pl.DataFrame:
    """Fallback probabilities: memory trending to its limit, else the last week's commonest class.

    `recurrence`, when given, is what a class expected back (not the memory projection, not
    seen in the last 24 h) is stated at: the fleet's learned chance that a bottleneck comes
    back within the horizon (`bottlenecks.recurrence`), instead of `RULE_PROBABILITY`.

    The memory projection wins (a leak is the most predictable saturation); otherwise, among the
    classes that recur at the horizon's scale (`{class}_recurrence`: in at least half of the last
    week's horizon-long blocks, so a daily event for a 24 h outlook, any event in the week for a
    7-day one), the one labelled in the most hours of the last 7 days is expected to come back.
    """
    rows = []
    recent = [c for c in BOTTLENECK_CLASSES if f"{c}_hours_7d" in frame.columns]
    for row in frame.iter_rows(named=True):
        chosen = None
        projected = row.get("memory_projected")
        if projected is not None and projected == projected and projected >= MEMORY_LIMIT_UTIL:
            chosen = "memory"
        else:
            counts = {
                c: row.get(f"{c}_hours_7d") or 0.0
                for c in recent
                if f"{c}_recurrence" not in row
                or (row[f"{c}_recurrence"] or 0.0) >= RECURRENCE_SHARE
            }
            if counts and max(counts.values()) > 0:
                chosen = max(counts, key=lambda c: counts[c])
        probs = dict.fromkeys(BOTTLENECK_CLASSES, 0.0)
        stated = RULE_PROBABILITY
        going_on = (row.get(f"{chosen}_hours_24h") or 0.0) > 0
        if chosen and chosen != "memory" and recurrence is not None and not going_on:
            stated = recurrence  # a class expected back: the fleet's own recurrence chance
        if chosen:
            probs[chosen] = stated
            probs["none"] = 1 - stated
        else:
            probs["none"] = 1.0
        rows.append(probs)
    return pl.DataFrame(rows, schema=dict.fromkeys(BOTTLENECK_CLASSES, pl.Float64))


def persistence_predict(frame: pl.DataFrame) -> pl.DataFrame:
    """Probabilities from persistence: the class labelled in most of the last 24 h, else `none`.

    Services that saturate for days at a time (a VM pinned at its CPU limit, a cache holding
    memory at the limit) are best described by "it stays as it is"; the outlook keeps this as a
    candidate so a model or rule that does worse than it on recent history is not preferred.
    Ties go to the earlier class in `BOTTLENECK_CLASSES`.
    """
    recent = [c for c in BOTTLENECK_CLASSES if f"{c}_hours_24h" in frame.columns]
    hours = (
        frame.select(pl.col(f"{c}_hours_24h").fill_null(0.0) for c in recent).to_numpy()
        if recent
        else np.zeros((frame.height, 0))
    )
    rows = []
    for counts in hours:
        probs = dict.fromkeys(BOTTLENECK_CLASSES, 0.0)
        if counts.size and counts.max() > 0:
            probs[recent[int(counts.argmax())]] = RULE_PROBABILITY
            probs["none"] = 1 - RULE_PROBABILITY
        else:
            probs["none"] = 1.0
        rows.append(probs)
    return pl.DataFrame(rows, schema=dict.fromkeys(BOTTLENECK_CLASSES, pl.Float64))


def most_likely(probabilities: pl.DataFrame) -> pl.Series:
    """The class with the highest probability per row (ties: the earlier class)."""
    matrix = probabilities.select(BOTTLENECK_CLASSES).to_numpy()
    return pl.Series("predicted", [BOTTLENECK_CLASSES[i] for i in matrix.argmax(axis=1)])
