"""Every warehouse read the finding producers need, in one place.

The producers work on frames; all SQL lives here, so a table that moves or changes its columns
is fixed in one module, and each read says what it does when its table is missing: a domain is
built and deployed on its own, so a missing table is a note, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.anomalies.fleet import ANOMALY_TABLE
from capacity_pipelines.common.freshness import FRESHNESS_WINDOW, stale_before
from capacity_pipelines.forecasting.fleet import HISTORY_DAYS
from capacity_pipelines.ingest.tables import (
    CONTAINER_USAGE_TABLE,
    LLM_TOKEN_USAGE_TABLE,
    SERVICE_TRAFFIC_TABLE,
)
from capacity_pipelines.tokens.fleet import TOKEN_COST_TABLE

LLM_WINDOW_DAYS = 7  # token savings are measured on the last week and scaled to 30 days
USAGE_WINDOW_DAYS = 7  # usage percentiles for "headroom after the change"

# The columns each producer reads; a table without one of them is skipped with a note.
RIGHTSIZING_COLUMNS = {
    "as_of", "namespace", "workload", "container", "status", "kind", "current_cpu_request",
    "cpu_request", "current_memory_request", "memory_request", "confidence",
    "monthly_saving_usd", "hpa", "oom_kills", "rationale",
}  # fmt: skip
RUNWAY_COLUMNS = {"as_of", "series_id", "family", "peak_p90", "capacity", "saturation_ts",
                  "runway_days", "note"}  # fmt: skip
FORECAST_COLUMNS = {"as_of", "series_id", "family", "p50", "p90", "p95"}
OUTLOOK_COLUMNS = {"as_of", "namespace", "service", "horizon", "bottleneck_class",
                   "probability", "evidence"}  # fmt: skip
TOKEN_COLUMNS = {"service", "agent", "provider", "model", "ts", "input_tokens", "output_tokens",
                 "cost_usd"}  # fmt: skip


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str] | None:
    """Columns of a warehouse table, or None when it does not exist."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
        "AND database_name = current_database()",
        [table],
    ).fetchall()
    return {r[0] for r in rows} or None


def latest_rows(
    con: duckdb.DuckDBPyConnection, table: str, as_of: datetime, needed: set[str], notes: list[str]
) -> pl.DataFrame | None:
    """Rows of the latest as-of day at or before `as_of`, or None (with a note).

    An as-of day older than the freshness window is not used: its answers were about a fleet
    as it was then (a run of a later day whose upstream step failed, or a warehouse that
    received another fleet's days), and advice from them would carry deadlines in the past.
    """
    columns = table_columns(con, table)
    if columns is None:
        notes.append(f"{table}: table not in the warehouse yet; its findings are skipped")
        return None
    missing = sorted(needed - columns)
    if missing:
        notes.append(f"{table}: columns {missing} missing; its findings are skipped")
        return None
    cut = as_of.replace(tzinfo=None)
    latest = con.execute(f'SELECT max(as_of) FROM "{table}" WHERE as_of <= ?', [cut]).fetchone()[0]
    if latest is not None and latest < stale_before(as_of):
        notes.append(
            f"{table}: its latest as-of day {latest:%Y-%m-%d %H:%M} is older than the "
            f"freshness window ({FRESHNESS_WINDOW}); its findings are skipped"
        )
        return None
    return con.execute(f'SELECT * FROM "{table}" WHERE as_of = ?', [latest]).pl()


def recent_anomalies(
    con: duckdb.DuckDBPyConnection, as_of: datetime, days: int = 7
) -> pl.DataFrame | None:
    """The hours flagged as anomalies in the `days` before `as_of` (series_id, ts, kind), as
    the daily runs scored them; None when the warehouse has no anomalies table yet."""
    if table_columns(con, ANOMALY_TABLE.name) is None:
        return None
    cut = as_of.replace(tzinfo=None)
    return con.execute(
        f'SELECT series_id, ts, kind FROM "{ANOMALY_TABLE.name}" '
        "WHERE is_anomaly AND as_of > ? AND as_of <= ? ORDER BY ts",
        [cut - timedelta(days=days), cut],
    ).pl()


@dataclass(frozen=True)
class LastSeen:
    """The newest sample of every target the findings can name, over the forecast history.

    `containers`: namespace, workload, container; `workloads`: namespace, name (workloads of
    container_usage and services of service_traffic alike); `llm`: service, agent, provider,
    model. Each with `last_seen` (naive UTC).
    """

    containers: pl.DataFrame
    workloads: pl.DataFrame
    llm: pl.DataFrame
    # which of them the warehouse could tell (a missing raw table knows nothing: no verdict)
    known: frozenset[str] = frozenset({"containers", "workloads", "llm"})

    @staticmethod
    def _kind(target: str) -> str:
        if target.startswith(("provider ", "llm ")):
            return "llm"
        if target.count("/") == 2 and not target.startswith("service "):
            return "containers"
        return "workloads"

    def judged(self, frame: pl.DataFrame) -> pl.Series:
        """Per finding, whether the table that would show its target's samples exists."""
        return pl.Series(
            "judged",
            [
                r.get("evidence_last_seen") is not None
                or self._kind(r["target"] or "") in self.known
                for r in frame.iter_rows(named=True)
            ],
            dtype=pl.Boolean,
        )

    def of(self, frame: pl.DataFrame) -> pl.Series:
        """`frame`'s `evidence_last_seen` where a producer set it, else its target's newest
        sample (NULL: no sample in the history window, or no table to tell)."""
        containers = {
            (r["namespace"], r["workload"], r["container"]): r["last_seen"]
            for r in self.containers.iter_rows(named=True)
        }
        workloads = {
            (r["namespace"], r["name"]): r["last_seen"]
            for r in self.workloads.iter_rows(named=True)
        }
        models: dict[str, datetime] = {}
        agents: dict[tuple, datetime] = {}
        for r in self.llm.iter_rows(named=True):
            for key, seen in ((f"{r['provider']}/{r['model']}", models),
                              ((r["service"], r["agent"] or r["service"]), agents)):  # fmt: skip
                seen[key] = max(seen.get(key, r["last_seen"]), r["last_seen"])
        seen = []
        for r in frame.iter_rows(named=True):
            target = r["target"] or ""
            kind = self._kind(target)
            if r.get("evidence_last_seen") is not None:
                seen.append(r["evidence_last_seen"])
            elif target.startswith("provider "):
                seen.append(models.get(target.removeprefix("provider ")))
            elif kind == "containers":
                seen.append(containers.get(tuple(target.split("/"))))
            elif kind == "workloads":
                seen.append(workloads.get((r["namespace"], r["service"])))
            else:  # `llm <namespace>/<service>[/<agent>]`
                parts = target.removeprefix("llm ").split("/")
                service = parts[1] if len(parts) > 1 else parts[0]
                seen.append(agents.get((service, parts[2] if len(parts) > 2 else service)))
        return pl.Series("evidence_last_seen", seen, dtype=pl.Datetime("us"))


def last_seen(con: duckdb.DuckDBPyConnection, as_of: datetime) -> LastSeen:
    """Newest sample per container, workload or service, and LLM agent, over the forecasting
    history before `as_of` (a missing table contributes nothing)."""
    end = as_of.replace(tzinfo=None)
    args = [end - timedelta(days=HISTORY_DAYS), end]

    present = {t for t in (CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE, LLM_TOKEN_USAGE_TABLE)
               if table_columns(con, t) is not None}  # fmt: skip

    def read(table: str, columns: str, names: dict[str, pl.DataType]) -> pl.DataFrame:
        schema = {**names, "last_seen": pl.Datetime("us")}
        if table not in present:
            return pl.DataFrame(schema=schema)
        sql = (
            f'SELECT {columns}, max(ts) AS last_seen FROM "{table}" WHERE ts > ? AND ts <= ? '
            "GROUP BY ALL"
        )
        return con.execute(sql, args).pl().cast(schema)

    text = pl.Utf8
    containers = read(
        CONTAINER_USAGE_TABLE, "namespace, workload, container",
        {"namespace": text, "workload": text, "container": text},
    )  # fmt: skip
    workloads = pl.concat(
        [
            containers.group_by("namespace", pl.col("workload").alias("name")).agg(
                pl.col("last_seen").max()
            ),
            read(SERVICE_TRAFFIC_TABLE, "namespace, service AS name",
                 {"namespace": text, "name": text}),
        ]  # fmt: skip
    ).group_by("namespace", "name").agg(pl.col("last_seen").max())
    llm = read(
        LLM_TOKEN_USAGE_TABLE, "service, agent, provider, model",
        {"service": text, "agent": text, "provider": text, "model": text},
    )  # fmt: skip
    known = {
        "containers": CONTAINER_USAGE_TABLE in present,
        "workloads": bool({CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE} & present),
        "llm": LLM_TOKEN_USAGE_TABLE in present,
    }
    return LastSeen(containers=containers, workloads=workloads, llm=llm,
                    known=frozenset(k for k, v in known.items() if v))  # fmt: skip


def usage_peaks(con: duckdb.DuckDBPyConnection, as_of: datetime) -> pl.DataFrame:
    """Per container, the last week's p95 CPU and peak memory (empty without usage)."""
    if table_columns(con, CONTAINER_USAGE_TABLE) is None:
        return pl.DataFrame(
            schema={
                "namespace": pl.Utf8,
                "workload": pl.Utf8,
                "container": pl.Utf8,
                "cpu_p95": pl.Float64,
                "memory_max": pl.Float64,
            }  # fmt: skip
        )
    end = as_of.replace(tzinfo=None)
    return con.execute(
        "SELECT namespace, workload, container, quantile_cont(cpu_cores, 0.95) AS cpu_p95, "
        f"max(memory_working_set_bytes) AS memory_max FROM {CONTAINER_USAGE_TABLE} "
        "WHERE ts > ? AND ts <= ? GROUP BY ALL",
        [end - timedelta(days=USAGE_WINDOW_DAYS), end],
    ).pl()


def workloads(
    con: duckdb.DuckDBPyConnection, as_of: datetime, rightsizing: pl.DataFrame | None
) -> pl.DataFrame:
    """Per workload: replicas now, whether an HPA moves them, and one pod's requests.

    A workload whose replica count changed in the last week, or that rightsizing flags as
    HPA-managed, counts as HPA (its runway fix is the HPA's maximum, not a replica count).
    """
    schema = {"namespace": pl.Utf8, "workload": pl.Utf8, "replicas": pl.Float64,
              "hpa": pl.Boolean, "cpu_request_pod": pl.Float64,
              "memory_request_pod": pl.Float64}  # fmt: skip
    if table_columns(con, CONTAINER_USAGE_TABLE) is None:
        return pl.DataFrame(schema=schema)
    end = as_of.replace(tzinfo=None)
    frame = con.execute(
        f"""WITH recent AS (
             SELECT namespace, workload, pod, ts, sum(cpu_request_cores) AS cpu,
                    sum(memory_request_bytes) AS mem
             FROM {CONTAINER_USAGE_TABLE} WHERE ts > ? AND ts <= ? GROUP BY ALL),
           per_step AS (SELECT namespace, workload, ts, count(*) AS pods FROM recent GROUP BY ALL)
           SELECT r.namespace, r.workload,
                  arg_max(p.pods, p.ts) AS replicas,
                  max(p.pods) > min(p.pods) AS hpa,
                  arg_max(r.cpu, r.ts) AS cpu_request_pod,
                  arg_max(r.mem, r.ts) AS memory_request_pod
           FROM recent r JOIN per_step p USING (namespace, workload, ts) GROUP BY ALL""",
        [end - timedelta(days=USAGE_WINDOW_DAYS), end],
    ).pl()
    frame = frame.cast({k: v for k, v in schema.items()})
    if rightsizing is not None and rightsizing.height:
        flagged = rightsizing.filter(pl.col("hpa")).select("namespace", "workload").unique()
        frame = frame.with_columns(
            (
                pl.col("hpa")
                | pl.struct("namespace", "workload").is_in(flagged.to_struct().implode())
            ).alias("hpa")
        )
    return frame


def has_service_windows(con: duckdb.DuckDBPyConnection) -> bool:
    """Both raw tables the bottleneck rules label are in the warehouse."""
    return all(table_columns(con, t) for t in (CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE))


def token_costs(
    con: duckdb.DuckDBPyConnection, as_of: datetime, notes: list[str]
) -> pl.DataFrame | None:
    """The last `LLM_WINDOW_DAYS` of costed token usage (UTC `ts`), or None (with a note)."""
    columns = table_columns(con, TOKEN_COST_TABLE.name)
    if columns is None or TOKEN_COLUMNS - columns:
        notes.append(
            f"{TOKEN_COST_TABLE.name}: table or columns missing; token savings are skipped"
        )
        return None
    end = as_of.replace(tzinfo=None)
    costed = con.execute(
        f"SELECT * FROM {TOKEN_COST_TABLE.name} WHERE ts > ? AND ts <= ? ORDER BY ts",
        [end - timedelta(days=LLM_WINDOW_DAYS), end],
    ).pl()
    if costed.height:
        costed = costed.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    return costed


def service_namespaces(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Service -> namespace from the traffic table (token usage carries no namespace)."""
    if not table_columns(con, SERVICE_TRAFFIC_TABLE):
        return {}
    return dict(
        con.execute(f"SELECT DISTINCT service, namespace FROM {SERVICE_TRAFFIC_TABLE}").fetchall()
    )
