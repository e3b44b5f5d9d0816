"""The workload kind from kube-state-metrics owner series, end to end.

`tests/fixtures/owners.om` holds one day of hourly samples (see `owners.README.md`) for a
Deployment's pod (through its ReplicaSet), a StatefulSet pod, a DaemonSet pod, a bare pod
(`owner_kind="<none>"`) and a pod without any owner series. It is extracted by the real
Dagster assets into a real DuckDB warehouse and rightsized; the same file backfilled into a
real Prometheus must give the same rows.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from capacity_pipelines.common.paths import DEFAULT_CATALOG
from capacity_pipelines.definitions import defs as build_defs
from capacity_pipelines.ingest.catalog import CatalogError, load_catalog, render_promql
from capacity_pipelines.ingest.extract import extract_table
from capacity_pipelines.ingest.owners import resolve_owners
from capacity_pipelines.ingest.sources import FileSource, PrometheusSettings, PrometheusSource
from capacity_pipelines.ingest.window import ingest_window
from capacity_pipelines.rightsizing.cli import main as rightsize_main
from capacity_pipelines.rightsizing.recommend import recommend_from_warehouse
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE
from capacity_pipelines.warehouse import connect, replace_as_of
from tests.pipeline import pipeline_resources
from tests.prometheus_server import PrometheusServer, backfill

FIXTURE = Path(__file__).parent / "fixtures" / "owners.om"
DAY = "2026-10-05"
START, END = datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 10, 6, tzinfo=UTC)
# (namespace, pod) -> (workload, kind) as kube-state-metrics says, or the pod-name fallback
EXPECTED = {
    ("shop", "web-5d8c7b9f4-x2k4m"): ("web", "Deployment"),
    ("shop", "db-0"): ("db", "StatefulSet"),
    ("ops", "node-agent-x7k2p"): ("node-agent", "DaemonSet"),
    # a bare pod is its own workload, although its name looks like a StatefulSet's pod
    ("ops", "debug-1"): ("debug-1", "Pod"),
    # no owner series at all: today's pod-name rollup, kind unknown
    ("shop", "legacy-6c9f7d8b5-hx2kq"): ("legacy", None),
}


def hourly_catalog(tmp_path: Path) -> Path:
    """The bundled catalog with the fixture's hourly resolution (the file stays small)."""
    raw = yaml.safe_load(DEFAULT_CATALOG.read_text())
    raw["defaults"].update(step="1h", rate_window="3h")
    path = tmp_path / "hourly_catalog.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---- resolving owners (pure) ---------------------------------------------------------------

POD_COLUMNS = ("cluster", "namespace", "pod", "owner_kind", "owner_name", "owner_is_controller")
RS_COLUMNS = ("cluster", "namespace", "replicaset", "owner_kind", "owner_name")


def _frame(columns: tuple[str, ...], rows: list[tuple]) -> pl.DataFrame:
    schema = {**{c: pl.Utf8 for c in columns}, "last_seen": pl.Float64}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    if "owner_is_controller" not in frame.columns:
        frame = frame.with_columns(pl.lit("true").alias("owner_is_controller"))
    return frame


@pytest.mark.parametrize(
    ("pod_owner", "replicaset_owner", "expected"),
    [
        (("ReplicaSet", "web-5d8c7b9f4"), ("Deployment", "web"), ("web", "Deployment")),
        # an Argo Rollout (or any controller) owning the ReplicaSet is named as such
        (("ReplicaSet", "web-5d8c7b9f4"), ("Rollout", "web"), ("web", "Rollout")),
        (("ReplicaSet", "web-5d8c7b9f4"), ("<none>", "<none>"), ("web-5d8c7b9f4", "ReplicaSet")),
        # the ReplicaSet's owner is not known: no guess, the caller falls back to the pod name
        (("ReplicaSet", "web-5d8c7b9f4"), None, None),
        (("StatefulSet", "db"), None, ("db", "StatefulSet")),
        (("DaemonSet", "node-agent"), None, ("node-agent", "DaemonSet")),
        (("Job", "backup-29341230"), None, ("backup-29341230", "Job")),
        (("<none>", "<none>"), None, ("p", "Pod")),
        (("Node", "node-1"), None, ("p", "Pod")),  # a static pod's mirror: not the Node
        (("", ""), None, None),
    ],
)
def test_resolve_owners(pod_owner, replicaset_owner, expected):
    pods = _frame(POD_COLUMNS, [("c", "ns", "p", *pod_owner, "true", 100.0)])
    replicasets = _frame(
        RS_COLUMNS,
        [("c", "ns", pod_owner[1], *replicaset_owner, 100.0)] if replicaset_owner else [],
    )
    resolved = resolve_owners(pods, replicasets)
    if expected is None:
        assert resolved.height == 0
    else:
        assert resolved.rows() == [("c", "ns", "p", *expected)]


def test_resolve_owners_prefers_the_controller_then_the_latest_owner():
    pods = _frame(
        POD_COLUMNS,
        [
            ("c", "ns", "p", "StatefulSet", "old", "true", 50.0),
            ("c", "ns", "p", "StatefulSet", "new", "true", 90.0),  # name reused later
            ("c", "ns", "p", "ConfigMap", "x", "false", 99.0),  # an owner, not the controller
            ("c", "other", "p", "DaemonSet", "d", "true", 10.0),  # same pod name elsewhere
        ],
    )
    resolved = resolve_owners(pods, _frame(RS_COLUMNS, [])).sort("namespace")
    assert resolved.rows() == [
        ("c", "ns", "p", "new", "StatefulSet"),
        ("c", "other", "p", "d", "DaemonSet"),
    ]


# ---- the catalog --------------------------------------------------------------------------


def test_catalog_renders_the_owner_queries():
    catalog = load_catalog()
    usage = catalog.table("container_usage")
    assert usage.owners is not None
    assert usage.all_columns[:7] == [*usage.key, "workload_kind", "ts"]
    pods = usage.owners.pods
    assert render_promql(pods, pods.columns[0], 300, 900) == (
        "max by (cluster, namespace, pod, owner_kind, owner_name, owner_is_controller) "
        "(max_over_time(kube_pod_owner[5m]))"
    )
    replicasets = usage.owners.replicasets
    assert "kube_replicaset_owner[5m]" in render_promql(
        replicasets, replicasets.columns[0], 300, 900
    )
    assert catalog.table("workload_replicas").owners is None


@pytest.mark.parametrize(
    ("owners", "rollup", "message"),
    [
        ("{pod: kube_pod_owner}", "pod_to_workload", "expected a mapping with 'pod' and"),
        ("{pod: 'x{a=b}', replicaset: y}", "pod_to_workload", "owners.pod: cannot parse"),
        ("{pod: x, replicaset: y}", "none", "needs `rollup: pod_to_workload`"),
    ],
)
def test_malformed_owners_entry_is_named(tmp_path: Path, owners, rollup, message):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "tables:\n  t:\n    source_labels: [cluster, namespace, pod]\n"
        f"    rollup: {rollup}\n    owners: {owners}\n"
        "    key: [cluster, namespace, workload, pod]\n"
        "    columns:\n      c: {op: gauge, selector: m}\n"
    )
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_pod_gone_just_before_the_window_keeps_its_owner(tmp_path: Path):
    """rate() still answers for a while after a pod's last sample: those rows of the next
    window must find the owner, whose series ended with the pod (here a window starting at
    00:05, which the hourly owner points alone would only see from 00:00)."""
    last = int(START.timestamp()) - 300  # the pod's last sample: 23:55 the day before
    labels = 'namespace="ops",pod="node-agent-x7k2p",container="agent"'
    owner = 'namespace="ops",pod="node-agent-x7k2p",owner_kind="DaemonSet",owner_name="node-agent"'
    lines = ["# TYPE container_cpu_usage_seconds counter"]
    lines += [f"container_cpu_usage_seconds_total{{{labels}}} {30 * i} {last - 300 * (5 - i)}"
              for i in range(6)]  # fmt: skip
    lines += ["# TYPE kube_pod_owner gauge"]
    lines += [f"kube_pod_owner{{{owner}}} 1 {last - 300 * i}" for i in range(5, -1, -1)]
    path = tmp_path / "gone.om"
    path.write_text("\n".join(lines) + "\n# EOF\n")
    start = START + timedelta(minutes=5)
    frame = extract_table(FileSource([path]), load_catalog(), "container_usage", start, END).frame
    assert frame["ts"].to_list() == [datetime(2026, 10, 5, 0, 5)]  # 23:50 and 23:55 in its rate
    assert frame.select(pl.col("workload", "workload_kind").cast(pl.String)).rows() == [
        ("node-agent", "DaemonSet")
    ]


# ---- through the Dagster assets, into the warehouse, rightsized -----------------------------


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("owners")
    resources = pipeline_resources(root, [FIXTURE])
    # The catalog shapes the asset set, so it is chosen when the definitions load.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CAPACITY_METRIC_CATALOG", str(hourly_catalog(root)))
        assets = list(build_defs().assets)
    with dg.DagsterInstance.ephemeral() as instance:
        for selection in (["container_usage"], ["container_rightsizing"]):
            result = dg.materialize(
                assets,
                selection=selection,
                resources=resources,
                instance=instance,
                partition_key=DAY,
            )
            assert result.success
    return root


def test_warehouse_rows_carry_the_owner_workload_and_kind(pipeline: Path):
    with duckdb.connect(str(pipeline / "wh.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT namespace, pod, any_value(workload), count(DISTINCT workload), "
            "any_value(workload_kind), count(DISTINCT workload_kind), count(*) "
            "FROM container_usage GROUP BY ALL ORDER BY pod"
        ).fetchall()
        documented = con.execute(
            "SELECT comment FROM duckdb_columns() "
            "WHERE table_name = 'container_usage' AND column_name = 'workload_kind'"
        ).fetchone()[0]
    assert {(r[0], r[1]): (r[2], r[4]) for r in rows} == EXPECTED
    for _, _, _, workloads, _, kinds, count in rows:
        assert workloads == 1 and kinds <= 1 and count == 24  # one answer for every hour
    assert "kube_pod_owner" in documented and "NULL" in documented


def test_each_recommendation_names_its_workload_kind(pipeline: Path):
    with duckdb.connect(str(pipeline / "wh.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT namespace, workload, workload_kind, status FROM container_rightsizing"
        ).fetchall()
    by_workload = {(ns, workload): (kind, status) for ns, workload, kind, status in rows}
    expected = {(ns, workload): kind for (ns, _), (workload, kind) in EXPECTED.items()}
    assert {key: kind for key, (kind, _) in by_workload.items()} == expected
    assert {status for _, status in by_workload.values()} == {"ok"}  # a full day each
    exported = pl.read_csv(pipeline / "reports" / "latest" / "rightsizing" / "rightsizing.csv")
    assert dict(zip(exported["workload"], exported["workload_kind"], strict=True)) == {
        workload: kind for (workload, kind) in EXPECTED.values()
    }


def test_warehouses_from_before_the_kind_gain_the_column(tmp_path: Path):
    """An existing warehouse (tables without `workload_kind`) is upgraded in place: old rows
    read NULL, new rows carry the kind, and the rightsizing table takes the new column."""
    db = tmp_path / "wh.duckdb"
    catalog = load_catalog(hourly_catalog(tmp_path))
    usage = extract_table(FileSource([FIXTURE]), catalog, "container_usage", START, END).frame
    recommendations = recommend_from_warehouse(usage)
    before_kinds = dataclasses.replace(
        RIGHTSIZING_TABLE,
        columns={c: d for c, d in RIGHTSIZING_TABLE.columns.items() if c != "workload_kind"},
    )
    old_as_of, new_as_of = datetime(2026, 10, 5), datetime(2026, 10, 6)
    with connect(db) as con:  # what an earlier release left behind
        con.execute(
            "CREATE TABLE container_usage (cluster VARCHAR NOT NULL, namespace VARCHAR NOT NULL, "
            "workload VARCHAR NOT NULL, pod VARCHAR NOT NULL, container VARCHAR NOT NULL, "
            "ts TIMESTAMP NOT NULL, cpu_cores DOUBLE)"
        )
        con.execute(
            "INSERT INTO container_usage VALUES ('demo', 'shop', 'db', 'db-0', 'postgres', "
            "'2026-10-04 12:00:00', 0.5)"
        )
        old = recommendations.with_columns(pl.lit(old_as_of).alias("as_of"))
        replace_as_of(con, before_kinds, old_as_of, old)
    ingest_window(FileSource([FIXTURE]), catalog, "container_usage", START, END, db)
    with connect(db) as con:
        new = recommendations.with_columns(pl.lit(new_as_of).alias("as_of"))
        replace_as_of(con, RIGHTSIZING_TABLE, new_as_of, new)
        kinds = con.execute(
            "SELECT ts < ?, workload_kind FROM container_usage WHERE pod = 'db-0' GROUP BY ALL",
            [old_as_of],
        ).fetchall()
        stored = con.execute(
            "SELECT as_of, workload_kind FROM container_rightsizing WHERE workload = 'db' "
            "ORDER BY as_of"
        ).fetchall()
    assert sorted(kinds) == [(False, "StatefulSet"), (True, None)]
    assert stored == [(old_as_of, None), (new_as_of, "StatefulSet")]


# ---- the file command ---------------------------------------------------------------------


def _usage(kinds: dict[str, str | None] | None) -> pl.DataFrame:
    hours = pl.datetime_range(START, END, "1h", closed="left", eager=True)
    frames = []
    for i, container_id in enumerate(("shop/db/postgres", "ops/node-agent/agent")):
        frame = pl.DataFrame(
            {
                "container_id": container_id,
                "ts": hours,
                "cpu_cores": [0.2 + 0.01 * i + 0.001 * h for h in range(hours.len())],
                "memory_bytes": [3e8 + 1e6 * h for h in range(hours.len())],
            }
        )
        if kinds is not None:
            frame = frame.with_columns(
                pl.lit(kinds.get(container_id), dtype=pl.String).alias("workload_kind")
            )
        frames.append(frame)
    return pl.concat(frames)


def _spec(kinds: dict[str, str | None] | None) -> pl.DataFrame:
    spec = pl.DataFrame(
        {
            "container_id": ["shop/db/postgres", "ops/node-agent/agent"],
            "cpu_request": [1.0, 0.5],
            "cpu_limit": [None, None],
            "memory_request": [1e9, 5e8],
            "memory_limit": [2e9, 1e9],
        },
        schema_overrides={"cpu_limit": pl.Float64},
    )
    if kinds is not None:
        spec = spec.with_columns(
            pl.Series("workload_kind", [kinds.get(c) for c in spec["container_id"]], pl.String)
        )
    return spec


@pytest.mark.parametrize(
    ("usage_kinds", "spec_kinds", "expected"),
    [
        (
            {"shop/db/postgres": "StatefulSet", "ops/node-agent/agent": "DaemonSet"},
            None,
            {"shop/db/postgres": "StatefulSet", "ops/node-agent/agent": "DaemonSet"},
        ),
        # S fills what U does not know; U's null stays null where S has nothing either
        (
            {"shop/db/postgres": None, "ops/node-agent/agent": None},
            {"shop/db/postgres": "StatefulSet"},
            {"shop/db/postgres": "StatefulSet", "ops/node-agent/agent": None},
        ),
        (None, None, {"shop/db/postgres": None, "ops/node-agent/agent": None}),
    ],
)
def test_rightsize_command_carries_workload_kind(
    tmp_path: Path, capsys, usage_kinds, spec_kinds, expected
):
    usage, spec, out = tmp_path / "u.parquet", tmp_path / "s.parquet", tmp_path / "r.parquet"
    _usage(usage_kinds).write_parquet(usage)
    _spec(spec_kinds).write_parquet(spec)
    code = rightsize_main(["--usage", str(usage), "--spec", str(spec), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = pl.read_parquet(out)
    assert result.schema["workload_kind"] == pl.String
    assert dict(zip(result["container_id"], result["workload_kind"], strict=True)) == expected


@pytest.mark.parametrize(
    ("usage_kinds", "spec_kinds", "message"),
    [
        (
            {"shop/db/postgres": "statefulset"},
            None,
            "u.parquet: column workload_kind: 24 values are not a Kubernetes kind "
            "(e.g. 'statefulset'",
        ),
        (
            {"shop/db/postgres": "StatefulSet"},
            {"shop/db/postgres": "Deployment"},
            "s.parquet: column workload_kind: says Deployment for container 'shop/db/postgres'",
        ),
    ],
)
def test_rightsize_command_refuses_bad_kinds(
    tmp_path: Path, capsys, usage_kinds, spec_kinds, message
):
    usage, spec, out = tmp_path / "u.parquet", tmp_path / "s.parquet", tmp_path / "r.parquet"
    _usage(usage_kinds).write_parquet(usage)
    _spec(spec_kinds).write_parquet(spec)
    code = rightsize_main(["--usage", str(usage), "--spec", str(spec), "--out", str(out)])
    assert code == 2 and not out.exists()
    assert message in capsys.readouterr().err


def test_rightsize_command_refuses_two_kinds_for_one_container(tmp_path: Path, capsys):
    usage, out = tmp_path / "u.parquet", tmp_path / "r.parquet"
    frame = _usage({"shop/db/postgres": "StatefulSet", "ops/node-agent/agent": "DaemonSet"})
    frame = frame.with_columns(
        pl.when((pl.col("container_id") == "shop/db/postgres") & (pl.col("ts") == START))
        .then(pl.lit("Deployment"))
        .otherwise(pl.col("workload_kind"))
        .alias("workload_kind")
    )
    frame.write_parquet(usage)
    assert rightsize_main(["--usage", str(usage), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'shop/db/postgres': Deployment, StatefulSet" in err and not out.exists()


# ---- the PromQL side, against a real Prometheus --------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("require_prometheus")
def test_prometheus_gives_the_same_workloads_and_kinds(tmp_path: Path):
    backfill(FIXTURE, tmp_path / "data")
    catalog = load_catalog(hourly_catalog(tmp_path))
    from_file = extract_table(FileSource([FIXTURE]), catalog, "container_usage", START, END)
    with PrometheusServer(tmp_path / "data") as server:
        source = PrometheusSource(PrometheusSettings(url=server.url))
        from_prom = extract_table(source, catalog, "container_usage", START, END)
    key = ["namespace", "pod", "workload", "workload_kind"]
    summary = [
        f.select(pl.col(key).cast(pl.String), "ts", "cpu_cores")
        .group_by(key)
        .agg(pl.len(), pl.col("cpu_cores").sum())
        .sort("pod")
        for f in (from_file.frame, from_prom.frame)
    ]
    assert summary[0].drop("cpu_cores").equals(summary[1].drop("cpu_cores"))
    assert (summary[0]["cpu_cores"] - summary[1]["cpu_cores"]).abs().max() < 1e-6
    found = {
        (r["namespace"], r["pod"]): (r["workload"], r["workload_kind"])
        for r in summary[1].iter_rows(named=True)
    }
    assert found == EXPECTED
