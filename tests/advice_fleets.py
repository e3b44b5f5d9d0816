"""The small fleets behind `tests/test_advice_scenarios.py`, one per wrong statement of issue 17.

A build tool for the fixtures, not test code: `python -m tests.advice_fleets` rewrites
`tests/fixtures/advice/*.om.xz` (deterministic: the same code gives the same bytes), and the
scenario tests read the committed files. Each fleet is OpenMetrics with timestamps, every 5
minutes, as Prometheus would have scraped it: cAdvisor CPU counters and working sets,
kube-state-metrics requests and limits, CFS throttling only where a container has a CPU limit
(as cAdvisor does), HTTP request counters and duration histograms per service, OpenTelemetry
GenAI token counters per agent. Series exist only while their pod does. What each fleet holds
and what the pipeline must say about it: `tests/fixtures/advice/README.md`.
"""

from __future__ import annotations

import lzma
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

STEP_S = 300
START = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday: the fleets fill ISO week 2026-W41
DAY_STEPS = 86_400 // STEP_S
FIXTURES = Path(__file__).parent / "fixtures" / "advice"
GIB = 2**30
MIB = 2**20
CFS_PERIODS_PER_S = 10  # the kernel's 100 ms CFS period
LATENCY_BUCKETS = (0.1, 0.5, 2.5)


@dataclass
class Series:
    family: str
    kind: str  # counter | gauge | histogram
    labels: str
    ts: np.ndarray
    values: np.ndarray  # for histograms: (steps, buckets + 1) cumulative counts, then sum


@dataclass
class Fleet:
    """Series of one fleet, written family by family with each series in time order."""

    start_s: int
    steps: int
    seed: int
    series: list[Series] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.t = self.start_s + np.arange(self.steps) * STEP_S

    def daily(self, low: float, high: float, noise: float = 0.03) -> np.ndarray:
        """A daily cycle between `low` and `high` (peak mid-afternoon UTC) with a little noise."""
        phase = 2 * np.pi * ((self.t % 86_400) / 86_400 - 0.375)
        level = low + (high - low) * (0.5 + 0.5 * np.sin(phase))
        return level * self.rng.uniform(1 - noise, 1 + noise, self.steps)

    def add(
        self, family: str, kind: str, labels: str, alive: slice | np.ndarray, values: np.ndarray
    ) -> None:
        self.series.append(Series(family, kind, labels, self.t[alive], values[alive]))

    def container(
        self,
        namespace: str,
        pod: str,
        container: str,
        cpu: np.ndarray,
        memory: np.ndarray,
        cpu_request: float,
        memory_request: float,
        cpu_limit: float | None = None,
        memory_limit: float | None = None,
        throttled: np.ndarray | None = None,
        alive: slice | np.ndarray = slice(None),
    ) -> None:
        """One container of one pod: usage counters and gauges, requests and limits."""
        labels = f'namespace="{namespace}",pod="{pod}",container="{container}"'
        n = len(self.t[alive])
        ones = np.ones(self.steps)
        cpu_seconds = np.zeros(self.steps)
        cpu_seconds[alive] = np.round(np.cumsum(cpu[alive] * STEP_S), 1)
        self.add("container_cpu_usage_seconds", "counter", labels, alive, cpu_seconds)
        self.add("container_memory_working_set_bytes", "gauge", labels, alive, np.round(memory))
        for resource, unit, value, family in (
            ("cpu", "core", cpu_request, "kube_pod_container_resource_requests"),
            ("memory", "byte", memory_request, "kube_pod_container_resource_requests"),
            ("cpu", "core", cpu_limit, "kube_pod_container_resource_limits"),
            ("memory", "byte", memory_limit, "kube_pod_container_resource_limits"),
        ):
            if value is not None:
                self.add(family, "gauge", f'{labels},resource="{resource}",unit="{unit}"', alive,
                         ones * value)  # fmt: skip
        self.add("kube_pod_container_status_restarts", "counter", labels, alive, 0 * ones)
        if cpu_limit is not None:  # cAdvisor exports CFS periods only under a CPU quota
            periods = np.zeros(self.steps)
            periods[alive] = np.arange(1, n + 1) * CFS_PERIODS_PER_S * STEP_S
            share = throttled if throttled is not None else np.zeros(self.steps)
            hit = np.zeros(self.steps)
            hit[alive] = np.round(np.cumsum(share[alive] * CFS_PERIODS_PER_S * STEP_S))
            self.add("container_cpu_cfs_periods", "counter", labels, alive, periods)
            self.add("container_cpu_cfs_throttled_periods", "counter", labels, alive, hit)

    def replicas(self, namespace: str, deployment: str, count: np.ndarray) -> None:
        labels = f'namespace="{namespace}",deployment="{deployment}"'
        self.add("kube_deployment_status_replicas", "gauge", labels, slice(None), count)

    def service(
        self, namespace: str, service: str, rps: np.ndarray, alive: slice | np.ndarray = slice(None)
    ) -> None:
        """Request counter, a latency histogram (mostly under 100 ms) and requests in flight."""
        labels = f'namespace="{namespace}",service="{service}"'
        requests = np.round(np.cumsum(rps * STEP_S))
        self.add("http_server_requests", "counter", f'{labels},status_code="200"', alive, requests)
        shares = np.array([0.80, 0.97, 0.995, 1.0])  # cumulative share per bucket, +Inf last
        buckets = np.round(requests[:, None] * shares[None, :])
        seconds = np.round(np.cumsum(rps * STEP_S * 0.06), 1)
        self.add("http_server_request_duration_seconds", "histogram", labels, alive,
                 np.column_stack([buckets, seconds]))  # fmt: skip
        self.add("http_server_active_requests", "gauge", labels, alive, np.round(rps * 0.06, 2))

    def llm(self, service: str, agent: str, provider: str, model: str, calls_per_s: np.ndarray,
            input_per_call: float, output_per_call: float) -> None:  # fmt: skip
        """OpenTelemetry GenAI counters of one agent on one model."""
        labels = (f'service="{service}",gen_ai_provider_name="{provider}",'
                  f'gen_ai_request_model="{model}",gen_ai_agent_name="{agent}"')  # fmt: skip
        calls = np.round(np.cumsum(calls_per_s * STEP_S))
        alive = slice(None)
        self.add("gen_ai_client_inference_usage_input_tokens", "counter", labels, alive,
                 np.round(calls * input_per_call))  # fmt: skip
        self.add("gen_ai_client_inference_usage_output_tokens", "counter", labels, alive,
                 np.round(calls * output_per_call))  # fmt: skip
        self.add("gen_ai_client_operation_duration_seconds", "histogram", labels, alive,
                 np.column_stack([calls, np.round(calls * 4.0)]))  # fmt: skip

    def text(self) -> str:
        """The fleet as OpenMetrics text: families contiguous, samples in time order."""
        out: list[str] = []
        families: dict[str, list[Series]] = {}
        for s in self.series:
            families.setdefault(s.family, []).append(s)
        for family, members in families.items():
            kind = members[0].kind
            out.append(f"# TYPE {family} {kind}\n")
            for s in members:
                for t, v in zip(s.ts, s.values, strict=True):
                    if kind == "counter":
                        out.append(f"{family}_total{{{s.labels}}} {_num(v)} {t}\n")
                    elif kind == "gauge":
                        out.append(f"{family}{{{s.labels}}} {_num(v)} {t}\n")
                    else:  # histogram: buckets, count and sum of one point together
                        bounds = (
                            [str(b) for b in LATENCY_BUCKETS] + ["+Inf"]
                            if len(v) > 2
                            else ["+Inf"]
                        )
                        for le, count in zip(bounds, v[:-1], strict=True):
                            bucket = f'{family}_bucket{{{s.labels},le="{le}"}}'
                            out.append(f"{bucket} {_num(count)} {t}\n")
                        out.append(f"{family}_count{{{s.labels}}} {_num(v[-2])} {t}\n")
                        out.append(f"{family}_sum{{{s.labels}}} {_num(v[-1])} {t}\n")
        out.append("# EOF\n")
        return "".join(out)


def _num(value: float) -> str:
    """Integers as integers, other values with every digit they were rounded to."""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else repr(round(value, 4))


def _fleet(days: float, seed: int, start: datetime = START) -> Fleet:
    return Fleet(int(start.timestamp()), int(days * DAY_STEPS), seed)


def runway_fleet() -> Fleet:
    """Issue 17, item 1. `agents/router` has no CPU and no memory limit and uses 4x its
    0.1-core request, never throttled: no runway, no "at the limit" (its request is raised by
    rightsizing). `shop/web` has a 1-core limit its growing load reaches, throttled at peak: a
    runway inside the week, "at the limit" with the throttling that shows it."""
    fleet = _fleet(7, seed=1)
    for pod in ("router-7fb9c4d2kx-b4x2q", "router-7fb9c4d2kx-m9z5t"):
        fleet.container("agents", pod, "router", fleet.daily(0.30, 0.45),
                        fleet.daily(290, 320) * MIB, cpu_request=0.1,
                        memory_request=256 * MIB)  # fmt: skip
    growth = np.linspace(1.0, 1.45, fleet.steps)
    web = np.minimum(fleet.daily(0.35, 0.66) * growth, 0.99)
    throttled = np.clip((web - 0.65) * 2.5, 0.0, 0.9)  # CFS throttles bursts below the mean
    fleet.container("shop", "web-5c8d6f9b7h-q2w4x", "web", web, fleet.daily(600, 640) * MIB,
                    cpu_request=0.5, memory_request=GIB, cpu_limit=1.0, memory_limit=2 * GIB,
                    throttled=throttled)  # fmt: skip
    fleet.replicas("agents", "router", np.full(fleet.steps, 2.0))
    fleet.replicas("shop", "web", np.ones(fleet.steps))
    fleet.service("agents", "router", fleet.daily(20, 40))
    fleet.service("shop", "web", fleet.daily(30, 60) * growth)
    return fleet


def stale_fleets() -> tuple[Fleet, Fleet]:
    """Issue 17, item 2. Days 5–10 Oct: `shop/cart` (a 1-core limit its load reaches, an
    over-sized memory request, an LLM assistant) and `shop/web`. Then the warehouse receives
    14 Oct from another fleet that has only `shop/web`: cart stopped reporting on 11 Oct."""
    first = _fleet(6, seed=2)
    growth = np.linspace(1.0, 1.5, first.steps)
    cart = np.minimum(first.daily(0.40, 0.72) * growth, 0.99)
    first.container("shop", "cart-6d9f7b8c4q-x7k2m", "cart", cart, first.daily(300, 330) * MIB,
                    cpu_request=0.5, memory_request=4 * GIB, cpu_limit=1.0,
                    memory_limit=4 * GIB, throttled=np.clip((cart - 0.8) * 3, 0, 0.9))  # fmt: skip
    first.service("shop", "cart", first.daily(10, 25) * growth)
    first.llm("cart", "cart-assistant", "openai", "gpt-4o", first.daily(0.5, 1.5),
              input_per_call=6000, output_per_call=400)  # fmt: skip
    web_first = first.daily(0.20, 0.30)
    first.container("shop", "web-5c8d6f9b7h-q2w4x", "web", web_first, first.daily(500, 520) * MIB,
                    cpu_request=0.5, memory_request=GIB, cpu_limit=1.0,
                    memory_limit=2 * GIB)  # fmt: skip
    first.service("shop", "web", first.daily(30, 60))
    later = _fleet(1, seed=3, start=datetime(2026, 10, 14, tzinfo=UTC))
    later.container("shop", "web-5c8d6f9b7h-q2w4x", "web", later.daily(0.20, 0.30),
                    later.daily(500, 520) * MIB, cpu_request=0.5, memory_request=GIB,
                    cpu_limit=1.0, memory_limit=2 * GIB)  # fmt: skip
    later.service("shop", "web", later.daily(30, 60))
    return first, later


def contradiction_fleet() -> Fleet:
    """Issue 17, item 3. `agents/coder`: 1 core requested and as its limit, ~0.3 used on
    average, but throttled at the limit (95 % of CFS periods) for three hours on 10 Oct.
    Rightsizing on average use would cut the CPU request; the throttling says the limit binds."""
    fleet = _fleet(7, seed=4)
    burst = slice(5 * DAY_STEPS + 10 * 12, 5 * DAY_STEPS + 13 * 12)  # 10 Oct 10:00-13:00
    for i, pod in enumerate(("coder-8b7c6d5f4g-h2j4k", "coder-8b7c6d5f4g-p9r7s")):
        cpu = fleet.daily(0.20, 0.40)
        throttled = np.zeros(fleet.steps)
        cpu[burst] = 0.99
        throttled[burst] = 0.95
        fleet.container("agents", pod, "coder", cpu, fleet.daily(380 + 10 * i, 420) * MIB,
                        cpu_request=1.0, memory_request=GIB, cpu_limit=1.0,
                        memory_limit=GIB, throttled=throttled)  # fmt: skip
    fleet.replicas("agents", "coder", np.full(fleet.steps, 2.0))
    fleet.service("agents", "coder", fleet.daily(5, 12))
    return fleet


def savings_fleet() -> Fleet:
    """Issue 17, item 4. `agents/planner` requests 2 cores and 4 GiB for ~0.2 cores and
    ~0.5 GiB (a measured saving), and its agent spends heavily on gpt-4o: batch tier, context
    compression, model routing and prompt caching are all estimated on that same spend."""
    fleet = _fleet(7, seed=5)
    for pod in ("planner-4f6g8h2j5k-w5x7z", "planner-4f6g8h2j5k-c6v9b"):
        fleet.container("agents", pod, "planner", fleet.daily(0.15, 0.25),
                        fleet.daily(480, 520) * MIB, cpu_request=2.0,
                        memory_request=4 * GIB)  # fmt: skip
    fleet.replicas("agents", "planner", np.full(fleet.steps, 2.0))
    fleet.service("agents", "planner", fleet.daily(5, 15))
    fleet.llm("planner", "planner", "openai", "gpt-4o", fleet.daily(2.0, 6.0),
              input_per_call=8000, output_per_call=500)  # fmt: skip
    return fleet


def churn_fleet() -> Fleet:
    """Issue 17, item 5. `shop/api` (2 replicas) is rolled out every day at 10:00: each pod
    lives a day, its successor starts five minutes before it stops, no scrape is missed (pod
    churn). `shop/api`'s traffic series misses 12 hours on 8 Oct: a real gap."""
    fleet = _fleet(7, seed=6)
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    rollout = 10 * 12  # 10:00
    for day in range(8):
        begin = max(0, (day - 1) * DAY_STEPS + rollout - 1)
        end = min(fleet.steps, day * DAY_STEPS + rollout + 1)
        if begin >= end:
            continue
        replica_set = "".join(alphabet[(day * 7 + k) % 27] for k in range(10))
        for replica in range(2):
            suffix = "".join(alphabet[(day * 5 + replica * 11 + k) % 27] for k in range(5))
            fleet.container("shop", f"api-{replica_set}-{suffix}", "api",
                            fleet.daily(0.2, 0.4), fleet.daily(300, 320) * MIB,
                            cpu_request=0.5, memory_request=512 * MIB, cpu_limit=1.0,
                            memory_limit=GIB, alive=slice(begin, end))  # fmt: skip
    fleet.replicas("shop", "api", np.full(fleet.steps, 2.0))
    outage_start, outage_end = 3 * DAY_STEPS + 6 * 12, 3 * DAY_STEPS + 18 * 12
    scraped = np.r_[0:outage_start, outage_end : fleet.steps]
    fleet.service("shop", "api", fleet.daily(20, 40), alive=scraped)
    return fleet


def fleets() -> dict[str, Fleet]:
    """Every fixture fleet by file stem."""
    stale_before, stale_after = stale_fleets()
    return {
        "runway": runway_fleet(),
        "stale_before": stale_before,
        "stale_after": stale_after,
        "contradiction": contradiction_fleet(),
        "savings": savings_fleet(),
        "churn": churn_fleet(),
    }


def write(folder: Path = FIXTURES) -> list[Path]:
    """Write every fleet as `<stem>.om.xz` (xz preset 9: a few hundred KiB each)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fleet in fleets().items():
        path = folder / f"{stem}.om.xz"
        path.write_bytes(lzma.compress(fleet.text().encode(), preset=9))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES):
        print(f"{path} {path.stat().st_size:,} bytes")
