"""Findings: what each domain's warehouse table says is worth doing, in one shape.

A finding is one candidate action (a playbook kind) on one target, with its evidence and the raw
quantities scoring needs: $ per month, SLO risk avoided, runway days gained, the finding's
confidence, history length, forecast uncertainty and headroom left after the change. Each
producer reads one table; a table (or a column family) that is missing is skipped with a note,
never a crash, because the domains are built and deployed independently.

The package keeps the warehouse reads (`reads`, all the SQL) apart from the producers, one
module per source of findings (`rightsizing`, `runway`, `quota`, `bottleneck`, `llm`), and from
`collect`, which runs them and merges the results. The names other modules import are
re-exported here, so `from capacity_pipelines.recommendations.findings import ...` keeps working.
"""

from capacity_pipelines.recommendations.findings.bottleneck import (
    RECENT_DAYS,
    bottleneck_findings,
    recent_bottlenecks,
)
from capacity_pipelines.recommendations.findings.collect import (
    EVIDENCE_CHARS,
    collect_findings,
    fold_runway_into_size_up,
    merge_duplicates,
)
from capacity_pipelines.recommendations.findings.llm import llm_findings
from capacity_pipelines.recommendations.findings.quota import quota_findings
from capacity_pipelines.recommendations.findings.reads import (
    LLM_WINDOW_DAYS,
    USAGE_WINDOW_DAYS,
    table_columns,
)
from capacity_pipelines.recommendations.findings.rightsizing import rightsizing_findings
from capacity_pipelines.recommendations.findings.runway import runway_findings
from capacity_pipelines.recommendations.findings.schema import (
    FINDING_SCHEMA,
    HORIZON_DAYS,
    Findings,
    empty_findings,
)

__all__ = [
    "EVIDENCE_CHARS",
    "FINDING_SCHEMA",
    "HORIZON_DAYS",
    "LLM_WINDOW_DAYS",
    "RECENT_DAYS",
    "USAGE_WINDOW_DAYS",
    "Findings",
    "bottleneck_findings",
    "collect_findings",
    "empty_findings",
    "fold_runway_into_size_up",
    "llm_findings",
    "merge_duplicates",
    "quota_findings",
    "recent_bottlenecks",
    "rightsizing_findings",
    "runway_findings",
    "table_columns",
]
