"""The `anomalies` asset: every hour of the as-of day of each forecast series, scored."""

import html

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.anomalies.fleet import ANOMALY_TABLE, STRONG_SCORE, bad_scores, score_fleet
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.checks import WARN, blocking_failures, check, refuse
from capacity_pipelines.defs.partitions import as_of_days, daily_partitions
from capacity_pipelines.defs.resources import WarehouseResource
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE
from capacity_pipelines.forecasting.fleet import load_series
from capacity_pipelines.ingest.tables import (
    CONTAINER_USAGE_TABLE,
    LLM_TOKEN_USAGE_TABLE,
    SERVICE_TRAFFIC_TABLE,
)

SHOWN = ["series_id", "ts", "value", "score", "kind", "evidence"]


@dg.asset(
    description="Every hour of the as-of day of each forecast series (request rates, workload "
    "CPU and memory, LLM tokens) with an anomaly score from the hours before it only, its kind "
    "(spike, dip, level shift, trend change) and evidence (table anomalies). WARNs when an hour "
    f"scores {STRONG_SCORE} or more (its series' 30-day record beaten by half). One day per "
    "as-of day: a run over several days computes each of them.",
    group_name="anomalies",
    kinds={"duckdb"},
    owners=["team:capacity"],
    tags=WRITES_WAREHOUSE,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE, LLM_TOKEN_USAGE_TABLE],
    check_specs=[
        dg.AssetCheckSpec(
            "scores_in_range",
            asset="anomalies",
            description="Every score is a number in [0, 1] (checked before writing).",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "no_strong_anomalies",
            asset="anomalies",
            description=f"No hour of the day scores {STRONG_SCORE} or more (WARN: look at them).",
        ),
    ],
)
def anomalies(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    for as_of in as_of_days(context):
        with warehouse.reader() as con:
            history = load_series(con, as_of).history
        scored = score_fleet(history, as_of)
        bad = bad_scores(scored)
        strong = scored.filter(pl.col("score") >= STRONG_SCORE).sort("score", descending=True)
        checks = [
            check("scores_in_range", bad == 0, f"{bad} scores outside [0, 1]",
                  metadata={"bad_rows": bad}),  # fmt: skip
            check(
                "no_strong_anomalies",
                strong.height == 0,
                f"{strong.height} hours score {STRONG_SCORE} or more as of {as_of:%Y-%m-%d}: "
                + html.escape(", ".join(strong["series_id"].unique(maintain_order=True)[:5])),
                severity=WARN,
                metadata={"strong": strong.height},
            ),
        ]
        if blocking_failures(checks):
            yield from refuse(checks, f"anomalies as of {as_of:%Y-%m-%d}")
        with warehouse.writer(f"anomalies as of {as_of:%Y-%m-%d}") as con:
            rows = wh.replace_as_of(con, ANOMALY_TABLE, as_of, scored)
    flagged = scored.filter(pl.col("is_anomaly")).sort("score", descending=True)
    shown = flagged.select(SHOWN).with_columns(
        pl.col(c).map_elements(html.escape, return_dtype=pl.Utf8)
        for c in ("series_id", "evidence")  # metric labels: escaped before the UI renders
    )
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "as_of": str(as_of),
            "days_computed": len(context.partition_keys),
            "series": scored["series_id"].n_unique(),
            "anomalies": flagged.height,
            "flagged": dg.MetadataValue.md(markdown_table(shown, rows=20)),
        },
        check_results=checks,
    )
