"""Tests of the bundled demo fleet (`assets/demo/`).

Most tests read the SHIPPED `fleet.om.xz` and `episodes.json` only, so they run anywhere. The
determinism test rebuilds a shortened fleet from `../shared/data` and skips when it is absent.

The small OpenMetrics reader below is deliberately minimal (the project's real parser lives in
`capacity_pipelines.ingest.sources.openmetrics`); it is strict about what this file must satisfy:
contiguous families, sample names that match the family type, `# EOF` last.
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import demo_fleet
from capacity_pipelines.common.paths import DEFAULT_CATALOG, DEMO_DIR, REPO_ROOT

FLEET_FILE = DEMO_DIR / "fleet.om.xz"
EPISODES_FILE = DEMO_DIR / "episodes.json"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PERIOD_START = int(datetime(2026, 9, 28, tzinfo=UTC).timestamp())
PERIOD_END = int(datetime(2026, 10, 26, tzinfo=UTC).timestamp())
INTERVAL = 300
# The only files the build may read: the permissive traces (see ../shared/data/README.md).
PERMISSIVE_FILES = (
    "app_server_requests_hourly_2015_2016.csv",
    "servegen_m-small_aggregate_10min.csv",
    "nab_aws/elb_request_count_8c0756.csv",
    "azure_llm_2023_code.csv",
    "mooncake_conversation_first15min.jsonl",
)

Labels = tuple[tuple[str, str], ...]


@dataclass
class ParsedSeries:
    family: str
    name: str
    labels: dict[str, str]
    ts: np.ndarray
    values: np.ndarray


@dataclass
class ParsedFleet:
    types: dict[str, str]
    series: list[ParsedSeries]

    def named(self, name: str, **match: str) -> list[ParsedSeries]:
        return [
            s for s in self.series
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
        ]


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def _sample_names(family: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{family}_total", f"{family}_created"}
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_count", f"{family}_sum", f"{family}_created"}
    return {family}


def parse_openmetrics(lines: Iterable[str]) -> ParsedFleet:
    """Parse OpenMetrics text with timestamps; raise AssertionError on format violations."""
    types: dict[str, str] = {}
    family = ""
    allowed: set[str] = set()
    raw: dict[str, tuple[str, list[str], list[str]]] = {}
    eof = False
    for line in lines:
        line = line.rstrip("\n")
        assert not eof, "content after # EOF"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if parts[1] == "EOF":
                eof = True
            elif parts[1] == "TYPE":
                family, kind = parts[2], parts[3]
                assert family not in types, f"family {family} is not contiguous"
                types[family] = kind
                allowed = _sample_names(family, kind)
            continue
        head, value, ts = line.rsplit(" ", 2)
        entry = raw.get(head)
        if entry is None:
            name = head.split("{", 1)[0]
            assert name in allowed, f"sample {name} outside its family {family}"
            entry = raw[head] = (family, [], [])
        entry[1].append(value)
        entry[2].append(ts)
    assert eof, "missing # EOF"
    series = []
    for head, (fam, values, stamps) in raw.items():
        name, _, label_text = head.partition("{")
        series.append(ParsedSeries(
            fam, name, dict(_LABEL.findall(label_text)),
            np.array(stamps, dtype=np.int64), np.array(values, dtype=float),
        ))
    return ParsedFleet(types, series)


def read_fleet(path: Path) -> ParsedFleet:
    with lzma.open(path, "rt") as fh:
        return parse_openmetrics(fh)


@pytest.fixture(scope="module")
def fleet() -> ParsedFleet:
    return read_fleet(FLEET_FILE)


@pytest.fixture(scope="module")
def episodes() -> list[dict]:
    return json.loads(EPISODES_FILE.read_text())["episodes"]


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _one(fleet: ParsedFleet, name: str, **match: str) -> ParsedSeries:
    found = fleet.named(name, **match)
    assert len(found) == 1, f"{name} {match}: {len(found)} series"
    return found[0]


def _rate(s: ParsedSeries) -> tuple[np.ndarray, np.ndarray]:
    """Per-interval increase of a counter, ignoring resets; stamped at the interval end."""
    diff = np.diff(s.values)
    return s.ts[1:], np.where(diff >= 0, diff, s.values[1:])


# ---- format ------------------------------------------------------------------------------


def test_shipped_files_exist_and_stay_small() -> None:
    assert FLEET_FILE.stat().st_size < 25 * 1024 * 1024
    assert (DEMO_DIR / "ATTRIBUTION.md").is_file()
    assert (DEMO_DIR / "README.md").is_file()


def test_parses_with_expected_series_count(fleet: ParsedFleet) -> None:
    assert 250 <= len(fleet.series) <= 420
    for s in fleet.series:
        assert s.labels["cluster"] == "demo"
        assert not np.isnan(s.values).any(), s.name


def test_period_and_scrape_interval(fleet: ParsedFleet) -> None:
    first = min(int(s.ts[0]) for s in fleet.series)
    last = max(int(s.ts[-1]) for s in fleet.series)
    assert first == PERIOD_START
    assert last == PERIOD_END - INTERVAL
    meta = json.loads(EPISODES_FILE.read_text())
    assert _epoch(meta["period_start"]) == PERIOD_START
    assert _epoch(meta["period_end"]) == PERIOD_END
    assert meta["scrape_interval_seconds"] == INTERVAL
    for s in fleet.series:
        assert (s.ts % INTERVAL == 0).all()
        assert (np.diff(s.ts) == INTERVAL).all(), f"{s.name} {s.labels} has gaps or disorder"


def _selector_parts(selector: str) -> tuple[str, list[tuple[str, str, str]]]:
    name, _, rest = selector.partition("{")
    matchers = re.findall(r'([a-zA-Z_]+)\s*(=~|!=|=)\s*"([^"]*)"', rest)
    return name, matchers


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for key, op, value in matchers:
        have = labels.get(key, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
    return True


def _catalog_selectors() -> list[tuple[str, str, list[str], dict[str, list[str]]]]:
    """(table, selector, required labels, label aliases) for the catalog's default mapping."""
    catalog = yaml.safe_load(DEFAULT_CATALOG.read_text())
    out = []
    for table_name, table in catalog["tables"].items():
        aliases = table.get("label_aliases", {})
        required = [label for label in table["source_labels"] if label not in aliases]
        columns = table.get("mappings", {}).get(table.get("mapping"), table["columns"])
        for column in columns.values():
            for key in ("selector", "denominator"):
                if key in column:
                    out.append((table_name, column[key], required, aliases))
        for role, selector in (table.get("owners") or {}).items():
            labels = ["cluster", "namespace", role, "owner_kind", "owner_name"]
            out.append((table_name, selector, labels, {}))
    return out


@pytest.mark.parametrize(
    ("table", "selector", "required", "aliases"), _catalog_selectors(),
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_catalog_default_mapping_is_present(
    fleet: ParsedFleet, table: str, selector: str, required: list[str],
    aliases: dict[str, list[str]],
) -> None:
    name, matchers = _selector_parts(selector)
    found = [s for s in fleet.series if s.name == name and _matches(s.labels, matchers)]
    assert found, f"{table}: no series for {selector}"
    for s in found:
        for label in required:
            assert s.labels.get(label), f"{selector}: {label} missing in {s.labels}"
        for target, candidates in aliases.items():
            assert any(s.labels.get(c) for c in candidates), f"{selector}: no {target} label"


def test_one_agent_uses_the_older_gen_ai_system_label(fleet: ParsedFleet) -> None:
    tokens = fleet.named("gen_ai_client_inference_usage_input_tokens_total")
    legacy = {s.labels["service"] for s in tokens if "gen_ai_system" in s.labels}
    current = {s.labels["service"] for s in tokens if "gen_ai_provider_name" in s.labels}
    assert len(legacy) == 1
    assert len(current) >= 5
    assert not legacy & current


def test_pod_names_follow_kubernetes_naming(fleet: ParsedFleet) -> None:
    deployments = {s.labels["deployment"] for s in fleet.named("kube_deployment_status_replicas")}
    pods = {s.labels["pod"] for s in fleet.named("container_memory_working_set_bytes")}
    for pod in pods:
        if pod.startswith(("vector-store-", "postgres-")):
            assert re.fullmatch(r"(vector-store|postgres)-\d", pod)
            continue
        m = re.fullmatch(r"(.+)-([bcdfghjklmnpqrstvwxz2456789]{9,10})-"
                         r"([bcdfghjklmnpqrstvwxz2456789]{5})", pod)
        assert m and m.group(1) in deployments, pod


def test_every_pod_names_its_owner(fleet: ParsedFleet) -> None:
    """kube_pod_owner for every pod while it runs; Deployment pods through their ReplicaSet,
    whose kube_replicaset_owner names the Deployment (the rightsizing patch's target)."""
    deployments = {s.labels["deployment"] for s in fleet.named("kube_deployment_status_replicas")}
    memory = {s.labels["pod"]: s for s in fleet.named("container_memory_working_set_bytes")
              if s.labels["container"] != "envoy"}
    owners = {s.labels["pod"]: s for s in fleet.named("kube_pod_owner")}
    assert owners.keys() == memory.keys()
    replicasets = {s.labels["replicaset"]: s for s in fleet.named("kube_replicaset_owner")}
    workload_kinds = {}
    for pod, owner in owners.items():
        assert np.array_equal(owner.ts, memory[pod].ts) and (owner.values == 1).all()
        assert owner.labels["owner_is_controller"] == "true"
        if owner.labels["owner_kind"] == "ReplicaSet":
            replicaset = replicasets[owner.labels["owner_name"]]
            assert pod.rsplit("-", 1)[0] == replicaset.labels["replicaset"]
            assert replicaset.ts[0] <= owner.ts[0] and replicaset.ts[-1] == PERIOD_END - INTERVAL
            kind, workload = replicaset.labels["owner_kind"], replicaset.labels["owner_name"]
            assert workload in deployments
        else:
            kind, workload = owner.labels["owner_kind"], owner.labels["owner_name"]
        workload_kinds[workload] = kind
    assert workload_kinds["postgres"] == workload_kinds["vector-store"] == "StatefulSet"
    assert {w for w, k in workload_kinds.items() if k == "Deployment"} == deployments
    assert set(workload_kinds.values()) == {"Deployment", "StatefulSet"}  # no DaemonSet


# ---- counters ----------------------------------------------------------------------------


def test_counters_are_monotone_except_at_container_restarts(fleet: ParsedFleet) -> None:
    restarts_at: dict[tuple[str, str], set[int]] = {}
    for s in fleet.named("kube_pod_container_status_restarts_total"):
        steps = s.ts[1:][np.diff(s.values) > 0]
        restarts_at[(s.labels["pod"], s.labels["container"])] = set(steps.tolist())
    resets_seen = 0
    for s in fleet.series:
        kind = fleet.types[s.family]
        if kind not in ("counter", "histogram") or s.name.endswith("_created"):
            continue
        drops = s.ts[1:][np.diff(s.values) < 0]
        if not drops.size:
            continue
        key = (s.labels.get("pod", ""), s.labels.get("container", ""))
        assert set(drops.tolist()) <= restarts_at.get(key, set()), f"{s.name} {s.labels}"
        resets_seen += drops.size
    assert resets_seen > 0, "the OOM restarts should reset some cAdvisor counters"


def test_histogram_buckets_are_cumulative(fleet: ParsedFleet) -> None:
    for count in fleet.named("http_server_request_duration_seconds_count"):
        buckets = fleet.named("http_server_request_duration_seconds_bucket",
                              service=count.labels["service"])
        buckets.sort(key=lambda b: float(b.labels["le"]))
        assert buckets[-1].labels["le"] == "+Inf"
        assert 9 <= len(buckets) <= 12
        stacked = np.vstack([b.values for b in buckets])
        assert (np.diff(stacked, axis=0) >= 0).all()
        assert np.array_equal(buckets[-1].values, count.values)
        requests = fleet.named("http_server_requests_total", service=count.labels["service"])
        assert np.array_equal(
            np.sum([np.diff(r.values) for r in requests], axis=0), np.diff(count.values)
        )


def test_cache_tokens_are_subsets_of_input(fleet: ParsedFleet) -> None:
    checked = 0
    for inp in fleet.named("gen_ai_client_inference_usage_input_tokens_total"):
        labels = inp.labels
        subset = np.zeros_like(inp.values)
        for part in ("cache_read", "cache_write"):
            found = [
                s for s in fleet.named(f"gen_ai_client_inference_usage_{part}_input_tokens_total")
                if s.labels == labels
            ]
            for s in found:
                assert np.array_equal(s.ts, inp.ts)
                subset += s.values
        assert (subset <= inp.values).all(), labels
        # Per step too, which is what billing uses.
        assert (np.diff(subset) <= np.diff(inp.values)).all(), labels
        checked += 1
    assert checked >= 6
    for reasoning in fleet.named("gen_ai_client_inference_usage_reasoning_output_tokens_total"):
        out = [s for s in fleet.named("gen_ai_client_inference_usage_output_tokens_total")
               if s.labels == reasoning.labels]
        assert len(out) == 1 and (np.diff(reasoning.values) <= np.diff(out[0].values)).all()


# ---- episodes ----------------------------------------------------------------------------


def test_episode_list_covers_every_required_kind(episodes: list[dict]) -> None:
    kinds = {e["kind"] for e in episodes}
    assert kinds == {"oom_kill", "cpu_throttling", "rollout", "hpa_scale_out",
                     "latency_incident"}
    for e in episodes:
        assert PERIOD_START <= _epoch(e["start"]) <= _epoch(e["end"]) < PERIOD_END


def test_oom_kills_follow_working_set_reaching_the_limit(
    fleet: ParsedFleet, episodes: list[dict]
) -> None:
    kills = [e for e in episodes if e["kind"] == "oom_kill"]
    assert len(kills) >= 2
    for e in kills:
        at = _epoch(e["start"])
        key = {"pod": e["pod"], "container": e["container"]}
        memory = _one(fleet, "container_memory_working_set_bytes", **key)
        limit = _one(fleet, "kube_pod_container_resource_limits", resource="memory", **key)
        restarts = _one(fleet, "kube_pod_container_status_restarts_total", **key)
        reason = _one(fleet, "kube_pod_container_status_last_terminated_reason",
                      reason="OOMKilled", **key)
        i = int(np.searchsorted(memory.ts, at))
        before = memory.values[max(0, i - 12):i]
        assert before.max() >= 0.97 * limit.values[i], e
        assert memory.values[i] < 0.85 * limit.values[i], "no drop after the restart"
        j = int(np.searchsorted(restarts.ts, at))
        assert restarts.values[j] == restarts.values[j - 1] + 1
        assert reason.values[int(np.searchsorted(reason.ts, at)):].min() == 1
        cpu = _one(fleet, "container_cpu_usage_seconds_total", **key)
        k = int(np.searchsorted(cpu.ts, at))
        assert cpu.values[k] < cpu.values[k - 1], "CPU counter should reset at the restart"


def test_throttling_episodes_are_visible(fleet: ParsedFleet, episodes: list[dict]) -> None:
    throttling = [e for e in episodes if e["kind"] == "cpu_throttling"]
    assert len(throttling) >= 3
    for e in throttling:
        key = {"pod": e["pod"], "container": e["container"]}
        ts, throttled = _rate(_one(fleet, "container_cpu_cfs_throttled_periods_total", **key))
        _, periods = _rate(_one(fleet, "container_cpu_cfs_periods_total", **key))
        ratio = throttled / np.maximum(periods, 1)
        inside = (ts > _epoch(e["start"])) & (ts <= _epoch(e["end"]))
        assert ratio[inside].max() > 0.5, e
        assert np.median(ratio[~inside]) < 0.05, e


def test_rollout_replaces_the_replicaset(fleet: ParsedFleet, episodes: list[dict]) -> None:
    (rollout,) = [e for e in episodes if e["kind"] == "rollout"]
    start, end = _epoch(rollout["start"]), _epoch(rollout["end"])
    pods = [s for s in fleet.named("container_memory_working_set_bytes",
                                   namespace=rollout["namespace"])
            if s.labels["pod"].startswith(rollout["workload"] + "-")]
    hashes = {s.labels["pod"].rsplit("-", 2)[1] for s in pods}
    assert len(hashes) == 2
    old = [s for s in pods if s.ts[0] == PERIOD_START]
    new = [s for s in pods if s.ts[0] > PERIOD_START]
    assert old and new
    assert all(s.ts[-1] < end for s in old), "old pods must stop reporting"
    assert all(start <= s.ts[0] < end and s.ts[-1] == PERIOD_END - INTERVAL for s in new)


def test_hpa_scale_out_and_back(fleet: ParsedFleet, episodes: list[dict]) -> None:
    (hpa,) = [e for e in episodes if e["kind"] == "hpa_scale_out"]
    replicas = _one(fleet, "kube_deployment_status_replicas", deployment=hpa["workload"])
    inside = (replicas.ts >= _epoch(hpa["start"])) & (replicas.ts <= _epoch(hpa["end"]))
    assert replicas.values[inside].max() == 5
    assert set(replicas.values[~inside].tolist()) == {2.0}
    pods = {s.labels["pod"]: s for s in fleet.named("container_memory_working_set_bytes")
            if s.labels["pod"].startswith(hpa["workload"] + "-")}
    extra = [s for s in pods.values() if s.ts[0] > PERIOD_START]
    assert len(extra) == 3
    assert all(_epoch(hpa["start"]) <= s.ts[0] and s.ts[-1] <= _epoch(hpa["end"])
               for s in extra)


def test_latency_incident_on_the_database(fleet: ParsedFleet, episodes: list[dict]) -> None:
    (incident,) = [e for e in episodes if e["kind"] == "latency_incident"]
    service = incident["service"]
    ts, seconds = _rate(_one(fleet, "http_server_request_duration_seconds_sum", service=service))
    _, count = _rate(_one(fleet, "http_server_request_duration_seconds_count", service=service))
    mean_latency = seconds / np.maximum(count, 1)
    inside = (ts > _epoch(incident["start"])) & (ts <= _epoch(incident["end"]))
    assert mean_latency[inside].max() > 10 * np.median(mean_latency[~inside])
    active = _one(fleet, "http_server_active_requests", service=service)
    act_inside = (active.ts > _epoch(incident["start"])) & (active.ts <= _epoch(incident["end"]))
    assert active.values[act_inside].max() > 5 * max(np.median(active.values[~act_inside]), 1)
    cpu_ts, cpu = _rate(_one(fleet, "container_cpu_usage_seconds_total", container=service))
    cpu_inside = (cpu_ts > _epoch(incident["start"])) & (cpu_ts <= _epoch(incident["end"]))
    assert cpu[cpu_inside].max() <= np.quantile(cpu[~cpu_inside], 0.95), "CPU must stay low"


def test_readme_documents_every_episode(episodes: list[dict]) -> None:
    readme = (DEMO_DIR / "README.md").read_text()
    for e in episodes:
        assert e["start"] in readme, e
    attribution = (DEMO_DIR / "ATTRIBUTION.md").read_text()
    used_rows = [line for line in attribution.splitlines() if line.startswith("| `")]
    assert {row.split("`")[1] for row in used_rows} == set(PERMISSIVE_FILES)


def test_rightsizing_has_something_to_find(fleet: ParsedFleet) -> None:
    """Some containers use far less CPU than requested, at least one uses more."""
    ratios = {}
    for cpu in fleet.named("container_cpu_usage_seconds_total"):
        key = {"pod": cpu.labels["pod"], "container": cpu.labels["container"]}
        request = _one(fleet, "kube_pod_container_resource_requests", resource="cpu", **key)
        _, used = _rate(cpu)
        ratios[cpu.labels["container"]] = np.quantile(used / INTERVAL, 0.95) / request.values[0]
    assert sum(r < 0.25 for r in ratios.values()) >= 3
    assert any(r > 1.5 for r in ratios.values())
    no_limit = {s.labels["container"] for s in fleet.named("container_cpu_usage_seconds_total")}
    no_limit -= {s.labels["container"] for s in fleet.named(
        "kube_pod_container_resource_limits", resource="cpu")}
    assert no_limit, "some containers should have no CPU limit"


# ---- rebuild -----------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_DATA.is_dir(),
                    reason=f"{SHARED_DATA} is absent: cannot rebuild the demo fleet")
def test_rebuild_is_deterministic_and_matches_the_shipped_fleet(
    tmp_path: Path, fleet: ParsedFleet
) -> None:
    """A full rebuild takes minutes, so rebuild two days twice: identical bytes, and the same
    samples as the shipped file over those two days (the full period is always generated, the
    day count only truncates the output). The build sees only the permissive files, which
    proves no research-only trace is needed."""
    data = tmp_path / "data"
    for name in PERMISSIVE_FILES:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED_DATA / name, data / name)
    stats_a = demo_fleet.main(["--data", str(data), "--out", str(tmp_path / "a"), "--days", "2"])
    stats_b = demo_fleet.main(["--data", str(data), "--out", str(tmp_path / "b"), "--days", "2"])
    assert stats_a == stats_b == 0
    a = (tmp_path / "a" / "fleet.om.xz").read_bytes()
    assert a == (tmp_path / "b" / "fleet.om.xz").read_bytes()
    short = read_fleet(tmp_path / "a" / "fleet.om.xz")
    cutoff = PERIOD_START + 2 * 86400
    shipped = {
        (s.name, tuple(sorted(s.labels.items()))): s for s in fleet.series if s.ts[0] < cutoff
    }
    assert len(short.series) == len(shipped)
    for s in short.series:
        full = shipped[(s.name, tuple(sorted(s.labels.items())))]
        keep = full.ts < cutoff
        assert np.array_equal(full.ts[keep], s.ts)
        assert np.array_equal(full.values[keep], s.values), s.name


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_promtool_accepts_the_shipped_fleet(tmp_path: Path) -> None:
    """The exact backfill command the integration tests use must accept the shipped file."""
    text = tmp_path / "fleet.om"
    with lzma.open(FLEET_FILE) as src, text.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    result = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=672h",
         str(text), str(tmp_path / "blocks")],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert any((tmp_path / "blocks").iterdir())
