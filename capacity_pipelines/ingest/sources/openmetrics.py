"""Read raw samples from exported files: OpenMetrics text, or long-format Parquet / CSV.

OpenMetrics is the format `promtool tsdb create-blocks-from openmetrics` backfills, so a team
can export from one Prometheus and analyse here without a server. Parsing is vectorised in
Polars (one regex over all lines), because a month of a small fleet is millions of lines.
"""

from __future__ import annotations

import gzip
import lzma
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from capacity_pipelines.common.contracts import MAX_PLAUSIBLE_VALUE

_SAMPLE = (
    r"^([a-zA-Z_:][a-zA-Z0-9_:]*)"  # metric name
    r'(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?'  # optional label set, quoted values may hold }
    r"[ \t]+(\S+)"  # value
    r"(?:[ \t]+([-+0-9.eE]+))?"  # timestamp (seconds)
    r"[ \t]*(?:#.*)?$"  # optional exemplar
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_SPECIAL_VALUES = {"+Inf": "inf", "Inf": "inf", "-Inf": "-inf", "NaN": "nan"}
_COUNTER_TYPE = re.compile(r"^#\s*TYPE\s+(\S+)\s+counter\s*$")


class ExportFormatError(ValueError):
    """An export file cannot be read; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class RawSamples:
    """Raw samples of many series in long form, plus each series' labels.

    `frame` has `series` (canonical `name{labels}` text), `ts` (float seconds, UTC) and
    `value`; `labels[series]` holds the label dict with `__name__`.
    """

    frame: pl.DataFrame
    labels: dict[str, dict[str, str]]

    def for_metric(self, metric: str) -> list[str]:
        """Series keys whose metric name is `metric`."""
        return [key for key, lab in self.labels.items() if lab["__name__"] == metric]


# The three escapes of the OpenMetrics label value grammar (`\\`, `\"`, `\n`). Read in one
# left-to-right pass: chained replace() calls would turn an escaped backslash followed by `n`
# (the label value `C:\new`) into a newline.
_ESCAPE_SEQUENCE = re.compile(r"\\(.)", flags=re.DOTALL)
_UNESCAPED = {"n": "\n", "\\": "\\", '"': '"'}


def _unescape(value: str) -> str:
    """Inverse of `_escape`; an unknown escape such as `\\t` is kept as written."""
    return _ESCAPE_SEQUENCE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(0)), value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def canonical_series(labels: dict[str, str]) -> str:
    """`name{a="1",b="2"}`, labels sorted, empty ones dropped (PromQL treats them as absent)."""
    name = labels["__name__"]
    pairs = sorted((k, v) for k, v in labels.items() if k != "__name__" and v != "")
    return name + "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def parse_label_set(text: str | None, where: str) -> dict[str, str]:
    """Parse `{a="1",b="2"}` into a dict; raise naming `where` when malformed."""
    if not text:
        return {}
    body = text[1:-1]
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        m = _LABEL.match(body, pos)
        if not m:
            raise ExportFormatError(f"{where}: malformed label set {text[:120]!r}")
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _read_text(path: Path) -> str:
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix)
    try:
        if opener is not None:
            with opener(path, "rt", encoding="utf-8") as fh:
                return fh.read()
        return path.read_text(encoding="utf-8")
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise ExportFormatError(f"{path}: cannot read: {exc}") from None


def _check_samples(frame: pl.DataFrame, path: Path, where) -> None:
    """Refuse what no exporter writes: an empty export, +-Inf or absurd values, two samples of
    one series at one timestamp. `frame` has series, ts, value, lineno, sorted by series, ts;
    `where(row)` names the place of a bad row ("file:line" or "file row n")."""
    if frame.height == 0:
        raise ExportFormatError(f"{path}: no samples (empty export)")
    if frame["value"].is_nan().all():
        raise ExportFormatError(f"{path}: every sample is NaN (no usable values)")
    value = pl.col("value")
    checks = (
        (value.is_infinite(), "value is infinite"),
        (
            # NaN stays allowed: it is how Prometheus writes stale markers, read as gaps.
            value.is_not_nan() & (value.abs() > MAX_PLAUSIBLE_VALUE),
            f"value beyond {MAX_PLAUSIBLE_VALUE:.0e}",
        ),
        (
            (pl.col("series") == pl.col("series").shift(1))
            & (pl.col("ts") == pl.col("ts").shift(1)),
            "second sample of the same series at the same timestamp",
        ),
    )
    for condition, problem in checks:
        bad = frame.filter(condition.fill_null(False))
        if bad.height:
            row = bad.row(0, named=True)
            raise ExportFormatError(
                f"{where(row)}: {problem} ({bad.height} such samples; series {row['series'][:120]})"
            )


def read_openmetrics(path: str | Path) -> RawSamples:
    """Parse an OpenMetrics / Prometheus text export with timestamps (plain, .gz or .xz)."""
    path = Path(path)
    text = _read_text(path)
    lines = pl.DataFrame({"line": text.split("\n")}).with_row_index("lineno", offset=1)
    del text
    body = lines.filter(
        ~pl.col("line").str.starts_with("#") & (pl.col("line").str.strip_chars() != "")
    )
    parsed = body.with_columns(pl.col("line").str.extract_groups(_SAMPLE).alias("m")).unnest("m")
    parsed = parsed.rename({"1": "name", "2": "label_text", "3": "raw_value", "4": "raw_ts"})
    bad = parsed.filter(pl.col("name").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise ExportFormatError(
            f"{path}:{row['lineno']}: not an OpenMetrics sample line: {row['line'][:120]!r}"
        )
    missing_ts = parsed.filter(pl.col("raw_ts").is_null())
    if missing_ts.height:
        row = missing_ts.row(0, named=True)
        raise ExportFormatError(
            f"{path}:{row['lineno']}: sample has no timestamp (exports need one per sample)"
        )
    parsed = parsed.with_columns(
        pl.col("raw_value").replace(_SPECIAL_VALUES).cast(pl.Float64, strict=False).alias("value"),
        pl.col("raw_ts").cast(pl.Float64, strict=False).alias("ts"),
    )
    bad = parsed.filter(pl.col("value").is_null() | pl.col("ts").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise ExportFormatError(
            f"{path}:{row['lineno']}: value or timestamp is not a number: {row['line'][:120]!r}"
        )
    counters = {
        m.group(1)
        for line in lines.filter(pl.col("line").str.starts_with("# TYPE"))["line"]
        if (m := _COUNTER_TYPE.match(line))
    }
    negative = parsed.filter(
        pl.col("name").is_in([*counters, *(f"{c}_total" for c in counters)]) & (pl.col("value") < 0)
    )
    if negative.height:
        row = negative.row(0, named=True)
        raise ExportFormatError(
            f"{path}:{row['lineno']}: negative counter value ({negative.height} such samples): "
            f"{row['line'][:120]!r}"
        )
    # Parse each distinct label set once: a series repeats its labels on every line.
    distinct = parsed.select("name", "label_text", "lineno").unique(
        ["name", "label_text"], keep="first", maintain_order=True
    )
    labels: dict[str, dict[str, str]] = {}
    raw_to_key: dict[tuple[str, str | None], str] = {}
    for name, label_text, lineno in distinct.iter_rows():
        lab = parse_label_set(label_text, f"{path}:{lineno}")
        lab["__name__"] = name
        key = canonical_series(lab)
        labels[key] = {k: v for k, v in lab.items() if v != ""}
        raw_to_key[(name, label_text)] = key
    mapping = pl.DataFrame(
        {
            "name": [k[0] for k in raw_to_key],
            "label_text": [k[1] for k in raw_to_key],
            "series": list(raw_to_key.values()),
        },
        schema={"name": pl.Utf8, "label_text": pl.Utf8, "series": pl.Utf8},
    )
    frame = (
        parsed.join(mapping, on=["name", "label_text"], how="left", nulls_equal=True)
        .select("series", "ts", "value", "lineno")
        .sort("series", "ts")
    )
    _check_samples(frame, path, lambda row: f"{path}:{row['lineno']}")
    return RawSamples(frame=frame.drop("lineno"), labels=labels)


def read_long_table(path: str | Path) -> RawSamples:
    """Read long-format samples: columns `metric`, `ts`, `value`, any others are labels.

    `ts` may be a timestamp (UTC) or epoch seconds. A NULL label means the label is absent.
    """
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
        else:
            df = pl.read_csv(path, infer_schema_length=10000)
    except Exception as exc:  # polars raises many types; name the file whatever it is
        raise ExportFormatError(f"{path}: cannot read: {exc}") from None
    for column in ("metric", "ts", "value"):
        if column not in df.columns:
            raise ExportFormatError(f"{path}: missing column {column!r}")
    if df.schema["ts"] in (pl.Utf8, pl.String):
        df = df.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", strict=False))
    if isinstance(df.schema["ts"], pl.Datetime):
        ts = pl.col("ts").dt.replace_time_zone(None) if df.schema["ts"].time_zone else pl.col("ts")
        df = df.with_columns((ts.dt.epoch("ms") / 1000.0).alias("ts"))
    try:
        df = df.with_columns(pl.col("ts").cast(pl.Float64), pl.col("value").cast(pl.Float64))
    except Exception:
        raise ExportFormatError(f"{path}: columns 'ts' and 'value' must be numeric") from None
    if df["ts"].null_count():
        raise ExportFormatError(f"{path}: column 'ts' has missing or unparseable timestamps")
    df = df.with_row_index("lineno")
    label_cols = [c for c in df.columns if c not in ("metric", "ts", "value", "lineno")]
    df = df.with_columns([pl.col(c).cast(pl.Utf8) for c in label_cols])
    distinct = df.select("metric", *label_cols).unique(maintain_order=True)
    labels: dict[str, dict[str, str]] = {}
    keys: list[str] = []
    for row in distinct.iter_rows(named=True):
        lab = {k: v for k, v in row.items() if k != "metric" and v not in (None, "")}
        lab["__name__"] = row["metric"]
        key = canonical_series(lab)
        labels[key] = lab
        keys.append(key)
    mapping = distinct.with_columns(pl.Series("series", keys))
    frame = (
        df.join(mapping, on=["metric", *label_cols], how="left", nulls_equal=True)
        .select("series", "ts", "value", "lineno")
        .sort("series", "ts")
    )
    _check_samples(frame, path, lambda row: f"{path} row {row['lineno']}")
    return RawSamples(frame=frame.drop("lineno"), labels=labels)


def _format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def write_openmetrics(samples: RawSamples, path: str | Path, types: dict[str, str]) -> None:
    """Write raw samples as OpenMetrics text (used by tests and benchmarks to backfill).

    `types` maps a family name to its OpenMetrics type; samples of a family stay contiguous and
    each series' samples in time order, as promtool requires.
    """
    path = Path(path)
    by_family: dict[str, list[str]] = {}
    for key, lab in samples.labels.items():
        name = lab["__name__"]
        family = next((f for f in types if name == f or name.startswith(f + "_")), name)
        by_family.setdefault(family, []).append(key)
    grouped = samples.frame.partition_by("series", as_dict=True, maintain_order=True)
    with path.open("w", encoding="utf-8") as out:
        for family, keys in by_family.items():
            out.write(f"# TYPE {family} {types.get(family, 'unknown')}\n")
            for key in keys:
                part = grouped.get((key,))
                if part is None:
                    continue
                name = key[:-2] if key.endswith("{}") else key
                for ts, value in part.select("ts", "value").iter_rows():
                    out.write(f"{name} {_format_value(value)} {ts:.3f}\n")
        out.write("# EOF\n")
