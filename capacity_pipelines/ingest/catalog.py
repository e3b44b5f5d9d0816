"""The metric catalog: which Prometheus series feed which warehouse table and column.

The catalog is declarative (`assets/metric_catalog.yaml`). Each column is a small structured
query, so the same definition can be rendered to PromQL for a live Prometheus and evaluated by
the file source over raw samples: both paths then give the same rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from capacity_pipelines.common.paths import DEFAULT_CATALOG

OPS = {
    "gauge",
    "max_over_time",
    "rate",
    "increase_per_step",
    "ratio_of_rates",
    "histogram_quantile",
}
AGGREGATIONS = {"sum", "max", "min", "avg"}
WORKLOAD_KIND = "workload_kind"
# kube-state-metrics' label names on its ownership series (fixed by the exporter, not the
# catalog); `owner_is_controller` picks the controller when a pod lists several owners.
POD_OWNER_LABELS = (
    "cluster",
    "namespace",
    "pod",
    "owner_kind",
    "owner_name",
    "owner_is_controller",
)
REPLICASET_OWNER_LABELS = (
    "cluster",
    "namespace",
    "replicaset",
    "owner_kind",
    "owner_name",
    "owner_is_controller",
)
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SELECTOR = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.S)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class CatalogError(ValueError):
    """The metric catalog is malformed; the message names the file and the entry."""


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as `5m` or `90s` (single unit, as we write them)."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise CatalogError(f"not a Prometheus duration: {text!r} (expected e.g. 30s, 5m, 1h)")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Shortest exact Prometheus duration for a number of seconds."""
    seconds = int(round(seconds))
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def promql_string(value: str) -> str:
    """`value` as a double-quoted PromQL string literal that reads back as exactly `value`.

    Label values come from whoever labels a pod: a quote, backslash or line break must stay
    text. PromQL strings follow Go's escapes, and its lexer refuses a raw line break inside
    quotes, so every control character is written as `\\xNN` (a byte: they are all ASCII).
    """
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector, with PromQL semantics (regexes fully anchored)."""

    label: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        """True when the series' labels satisfy this matcher (missing label = empty string)."""
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found

    def promql(self) -> str:
        return f"{self.label}{self.op}{promql_string(self.value)}"


@dataclass(frozen=True)
class Selector:
    """A PromQL instant-vector selector: a metric name and label matchers."""

    metric: str
    matchers: tuple[Matcher, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Selector:
        match = _SELECTOR.match(text or "")
        if not match:
            raise CatalogError(f"not a PromQL selector: {text!r}")
        body = (match.group(2) or "").strip()
        matchers: list[Matcher] = []
        pos = 0
        while pos < len(body):
            m = _MATCHER.match(body, pos)
            if not m:
                raise CatalogError(f"cannot parse label matchers in selector {text!r}")
            value = re.sub(r"\\(.)", r"\1", m.group(3))
            matchers.append(Matcher(m.group(1), m.group(2), value))
            pos = m.end()
        return cls(match.group(1), tuple(matchers))

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def promql(self) -> str:
        if not self.matchers:
            return self.metric
        return self.metric + "{" + ",".join(m.promql() for m in self.matchers) + "}"


@dataclass(frozen=True)
class ColumnQuery:
    """How one warehouse column is computed from raw series."""

    column: str
    op: str
    selector: Selector | None
    agg: str = "sum"
    denominator: Selector | None = None
    quantile: float | None = None
    raw_promql: str | None = None
    label_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class OwnerQueries:
    """kube-state-metrics ownership series that name a table's workloads and their kind.

    Each is a one-column table of its own (the series' labels are what matters, the value is
    always 1), so both sources answer it the way they answer any catalog column.
    """

    pods: TableSpec  # kube_pod_owner by cluster, namespace, pod, owner_kind, owner_name, ...
    replicasets: TableSpec  # kube_replicaset_owner by cluster, namespace, replicaset, ...


@dataclass(frozen=True)
class TableSpec:
    """One warehouse table: a metric family with typed columns and its entity key."""

    name: str
    description: str
    source_labels: tuple[str, ...]
    key: tuple[str, ...]
    columns: tuple[ColumnQuery, ...]
    rename: dict[str, str] = field(default_factory=dict)
    rollup: str | None = None
    owners: OwnerQueries | None = None

    @property
    def value_columns(self) -> list[str]:
        return [c.column for c in self.columns]

    @property
    def label_columns(self) -> list[str]:
        """Text columns that describe the entity without being part of its key (NULL allowed)."""
        return [WORKLOAD_KIND] if self.owners is not None else []

    @property
    def all_columns(self) -> list[str]:
        return [*self.key, *self.label_columns, "ts", *self.value_columns]


@dataclass(frozen=True)
class Catalog:
    """The whole catalog plus the extraction defaults (step, rate window, default cluster)."""

    path: Path
    step_seconds: float
    rate_window_seconds: float
    default_cluster: str
    tables: dict[str, TableSpec]

    def table(self, name: str) -> TableSpec:
        try:
            return self.tables[name]
        except KeyError:
            raise CatalogError(
                f"{self.path}: no table {name!r}; known: {', '.join(self.tables)}"
            ) from None


def _column_query(
    table: str, column: str, spec: dict[str, Any], aliases: dict[str, tuple[str, ...]], where: str
) -> ColumnQuery:
    if "promql" in spec:
        return ColumnQuery(
            column=column,
            op="promql",
            selector=None,
            raw_promql=str(spec["promql"]),
            label_aliases=aliases,
            unit=str(spec.get("unit", "")),
            description=str(spec.get("description", "")),
        )
    op = spec.get("op")
    if op not in OPS:
        raise CatalogError(f"{where}: {table}.{column}: op {op!r} is not one of {sorted(OPS)}")
    agg = spec.get("agg", "sum")
    if agg not in AGGREGATIONS:
        raise CatalogError(f"{where}: {table}.{column}: agg {agg!r} not in {sorted(AGGREGATIONS)}")
    if "selector" not in spec:
        raise CatalogError(f"{where}: {table}.{column}: missing selector")
    own_aliases = {k: tuple(v) for k, v in (spec.get("label_aliases") or {}).items()}
    try:
        selector = Selector.parse(spec["selector"])
        denominator = Selector.parse(spec["denominator"]) if op == "ratio_of_rates" else None
    except CatalogError as exc:
        raise CatalogError(f"{where}: {table}.{column}: {exc}") from None
    quantile = spec.get("quantile")
    if op == "histogram_quantile" and not (isinstance(quantile, int | float) and 0 < quantile < 1):
        raise CatalogError(f"{where}: {table}.{column}: histogram_quantile needs 0 < quantile < 1")
    return ColumnQuery(
        column=column,
        op=op,
        selector=selector,
        agg=agg,
        denominator=denominator,
        quantile=float(quantile) if quantile is not None else None,
        label_aliases={**aliases, **own_aliases},
        unit=str(spec.get("unit", "")),
        description=str(spec.get("description", "")),
    )


def _owner_table(
    table: str, role: str, selector: str, labels: tuple[str, ...], where: str
) -> TableSpec:
    try:
        parsed = Selector.parse(selector)
    except CatalogError as exc:
        raise CatalogError(f"{where}: {table}.owners.{role}: {exc}") from None
    query = ColumnQuery(column="owned", op="max_over_time", selector=parsed, agg="max")
    return TableSpec(
        name=f"{table}.owners.{role}",
        description=f"{role} ownership series of {table}",
        source_labels=labels,
        key=labels,
        columns=(query,),
    )


def _owner_queries(
    table: str,
    spec: dict[str, Any],
    source_labels: tuple[str, ...],
    key: tuple[str, ...],
    where: str,
) -> OwnerQueries | None:
    """The `owners:` entry of a table: which series name each pod's workload and its kind."""
    owners = spec.get("owners")
    if owners is None:
        return None
    if not isinstance(owners, dict) or set(owners) != {"pod", "replicaset"}:
        raise CatalogError(
            f"{where}: {table}.owners: expected a mapping with 'pod' and 'replicaset' selectors"
        )
    if spec.get("rollup") != "pod_to_workload" or "pod" not in source_labels:
        raise CatalogError(
            f"{where}: {table}.owners: needs `rollup: pod_to_workload` over a `pod` label "
            "(the pod-name rollup is the fallback for pods without owner series)"
        )
    if "workload" not in key:
        raise CatalogError(f"{where}: {table}.owners: the key must hold `workload`")
    return OwnerQueries(
        pods=_owner_table(table, "pod", str(owners["pod"]), POD_OWNER_LABELS, where),
        replicasets=_owner_table(
            table, "replicaset", str(owners["replicaset"]), REPLICASET_OWNER_LABELS, where
        ),
    )


def load_catalog(path: str | Path | None = None, llm_mapping: str | None = None) -> Catalog:
    """Read and validate a catalog (default: the bundled one).

    `llm_mapping` picks which exporter mapping feeds `llm_token_usage` (otel_counters,
    otel_histogram, litellm); default is the catalog's own `mapping:` entry.
    """
    path = Path(path or DEFAULT_CATALOG)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"{path}: metric catalog not found") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tables"), dict):
        raise CatalogError(f"{path}: expected a mapping with a 'tables:' section")
    defaults = raw.get("defaults") or {}
    tables: dict[str, TableSpec] = {}
    for name, spec in raw["tables"].items():
        aliases = {k: tuple(v) for k, v in (spec.get("label_aliases") or {}).items()}
        column_specs: dict[str, Any] = dict(spec.get("columns") or {})
        if "mappings" in spec:
            mapping = llm_mapping or spec.get("mapping")
            if mapping not in spec["mappings"]:
                raise CatalogError(
                    f"{path}: {name}: mapping {mapping!r} not in {sorted(spec['mappings'])}"
                )
            chosen = spec["mappings"][mapping]
            column_specs = {
                col: {**(column_specs.get(col) or {}), **query} for col, query in chosen.items()
            }
        if not column_specs:
            raise CatalogError(f"{path}: {name}: no columns")
        columns = tuple(
            _column_query(name, col, col_spec or {}, aliases, str(path))
            for col, col_spec in column_specs.items()
        )
        source_labels = tuple(spec["source_labels"])
        key = tuple(spec.get("key") or spec["source_labels"])
        tables[name] = TableSpec(
            name=name,
            description=str(spec.get("description", "")).strip(),
            source_labels=source_labels,
            key=key,
            columns=columns,
            rename=dict(spec.get("rename") or {}),
            rollup=spec.get("rollup"),
            owners=_owner_queries(name, spec, source_labels, key, str(path)),
        )
    return Catalog(
        path=path,
        step_seconds=parse_duration(defaults.get("step", "5m")),
        rate_window_seconds=parse_duration(defaults.get("rate_window", "15m")),
        default_cluster=str(defaults.get("cluster", "default")),
        tables=tables,
    )


def _with_aliases(expr: str, aliases: dict[str, tuple[str, ...]]) -> str:
    """Wrap an instant-vector expression in label_replace calls for label aliases.

    label_replace with regex `(.+)` only writes when the source label is non-empty, so applying
    the sources from lowest to highest priority leaves the first non-empty one in place.
    """
    for target, sources in aliases.items():
        for source in reversed(sources):
            if source == target:
                continue
            expr = f'label_replace({expr}, "{target}", "$1", "{source}", "(.+)")'
    return expr


def render_promql(table: TableSpec, query: ColumnQuery, step_s: float, window_s: float) -> str:
    """The PromQL for one column, aggregated by the table's source labels."""
    if query.raw_promql is not None:
        return query.raw_promql
    assert query.selector is not None
    by = ", ".join(table.source_labels)
    step, window = format_duration(step_s), format_duration(window_s)
    sel = query.selector.promql()

    def rated(selector: str) -> str:
        return _with_aliases(f"rate({selector}[{window}])", query.label_aliases)

    if query.op == "gauge":
        inner = _with_aliases(f"avg_over_time({sel}[{step}])", query.label_aliases)
        return f"{query.agg} by ({by}) ({inner})"
    if query.op == "max_over_time":
        inner = _with_aliases(f"max_over_time({sel}[{step}])", query.label_aliases)
        return f"{query.agg} by ({by}) ({inner})"
    if query.op == "rate":
        return f"{query.agg} by ({by}) ({rated(sel)})"
    if query.op == "increase_per_step":
        return f"{query.agg} by ({by}) ({rated(sel)}) * {int(step_s)}"
    if query.op == "ratio_of_rates":
        assert query.denominator is not None
        return f"sum by ({by}) ({rated(sel)}) / sum by ({by}) ({rated(query.denominator.promql())})"
    if query.op == "histogram_quantile":
        return f"histogram_quantile({query.quantile}, sum by ({by}, le) ({rated(sel)}))"
    raise CatalogError(f"unknown op {query.op!r}")
