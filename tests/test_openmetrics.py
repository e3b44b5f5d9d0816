"""Reading exports: OpenMetrics text and long Parquet/CSV, and their errors."""

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capacity_pipelines.ingest.sources.openmetrics import (
    ExportFormatError,
    _escape,
    _unescape,
    read_long_table,
    read_openmetrics,
    write_openmetrics,
)

EXPORT = """\
# HELP container_cpu_usage_seconds CPU
# TYPE container_cpu_usage_seconds counter
container_cpu_usage_seconds_total{namespace="a",pod="p-1",container="c"} 10.5 1000
container_cpu_usage_seconds_total{container="c",pod="p-1",namespace="a"} 11.5 1060
container_cpu_usage_seconds_total{namespace="a",pod="q}\\"x",container="c"} 1 1000
# TYPE up gauge
up 1 1000
up NaN 1060
# EOF
"""


def test_parses_label_sets_escapes_and_special_values(tmp_path: Path):
    path = tmp_path / "x.om"
    path.write_text(EXPORT)
    raw = read_openmetrics(path)
    # the two differently-ordered label sets are one series
    assert len(raw.labels) == 3
    cpu = [k for k, v in raw.labels.items() if v.get("pod") == "p-1"]
    assert len(cpu) == 1
    assert raw.frame.filter(pl.col("series") == cpu[0])["value"].to_list() == [10.5, 11.5]
    assert any(v.get("pod") == 'q}"x' for v in raw.labels.values())
    up = raw.frame.filter(pl.col("series") == "up{}")["value"].to_list()
    assert up[0] == 1.0 and up[1] != up[1]  # NaN kept as NaN


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('metric{a="1" 5 100', "not an OpenMetrics sample line"),
        ("metric 5", "has no timestamp"),
        ("metric five 100", "not a number"),
    ],
)
def test_malformed_export_names_file_and_line(tmp_path: Path, line, message):
    path = tmp_path / "bad.om"
    path.write_text(f"# TYPE metric gauge\nmetric 1 50\n{line}\n# EOF\n")
    with pytest.raises(ExportFormatError) as err:
        read_openmetrics(path)
    assert f"{path}:3:" in str(err.value)
    assert message in str(err.value)


def test_round_trip_through_writer(tmp_path: Path):
    src = tmp_path / "x.om"
    src.write_text(EXPORT)
    raw = read_openmetrics(src)
    out = tmp_path / "y.om"
    write_openmetrics(raw, out, {"container_cpu_usage_seconds": "counter", "up": "gauge"})
    again = read_openmetrics(out)
    assert again.labels == raw.labels
    assert again.frame.drop("value").equals(raw.frame.drop("value"))


# Text that stresses the escaping: the three escaped characters, `n` right after a backslash,
# and any other Unicode (surrogates excluded: they cannot be written as UTF-8).
LABEL_TEXT = st.lists(
    st.one_of(
        st.sampled_from(["\\", '"', "\n", "n", "t", "\\n", '\\"']),
        st.characters(exclude_categories=("Cs",)),
    )
).map("".join)


@settings(database=None, derandomize=True)  # same examples every run; no database written
@given(LABEL_TEXT)
def test_unescape_inverts_escape(value: str):
    assert _unescape(_escape(value)) == value


def test_windows_path_label_survives_a_file_round_trip(tmp_path: Path):
    # `C:\new` once came back with a newline: `\\n` was read as `\` + `\n`.
    path = tmp_path / "x.om"
    path.write_text("# TYPE up gauge\n" + r'up{path="C:\\new"} 1 1000' + "\n# EOF\n")
    labels = read_openmetrics(path).labels
    assert [lab["path"] for lab in labels.values()] == ["C:\\new"]


def test_long_parquet_with_timestamps(tmp_path: Path):
    path = tmp_path / "long.parquet"
    pl.DataFrame(
        {
            "metric": ["up", "up"],
            "ts": ["2026-09-28T00:00:00Z", "2026-09-28T00:05:00Z"],
            "value": [1.0, 0.0],
            "job": ["api", None],
        }
    ).write_parquet(path)
    raw = read_long_table(path)
    assert sorted(raw.labels) == ['up{job="api"}', "up{}"]
    assert raw.frame["ts"].to_list()[0] == pytest.approx(1790553600.0)


def test_long_table_missing_column_is_named(tmp_path: Path):
    path = tmp_path / "long.csv"
    path.write_text("metric,time,value\nup,1,1\n")
    with pytest.raises(ExportFormatError, match="missing column 'ts'"):
        read_long_table(path)
