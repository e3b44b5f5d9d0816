"""The rightsizing benchmark's guarantees on real VMs (Bitbrains, research-only data read from
../shared/data in place; skipped when the folder is absent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "rightsizing_bench.py"

pytestmark = pytest.mark.research_data


def load_bench():
    spec = importlib.util.spec_from_file_location("rightsizing_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module executes
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def week_4(shared_data: Path) -> dict:
    bench = load_bench()
    if not bench.DATA.exists():
        pytest.skip(f"{bench.DATA} is absent")
    from capacity_pipelines.rightsizing.prices import load_compute_prices

    prices = load_compute_prices()
    price = prices.price()
    frame = bench.load_bitbrains()
    week = 7 * bench.DAY_S
    return bench.run_split(
        frame, "weeks 1-3 / 4", 3 * week, 4 * week, lambda c, m: prices.monthly_usd(c, m, price)
    )


def test_balanced_violates_and_ooms_no_more_than_krr_and_vpa_with_less_memory(week_4: dict):
    scores = week_4["scores"]
    ours = scores["capacity_pipelines (balanced)"]
    krr, vpa = scores["KRR simple"], scores["VPA recommender"]
    assert ours["cpu_violation_rate"] <= min(krr["cpu_violation_rate"], vpa["cpu_violation_rate"])
    assert ours["memory_oom_proxy"] <= min(krr["memory_oom_proxy"], vpa["memory_oom_proxy"])
    assert ours["gib_hours"] <= krr["gib_hours"]
    assert ours["usd_per_month"] < 0.5 * scores["current provisioning"]["usd_per_month"]
    # the hindsight optimum bounds constant requests at VPA's violation rate
    hindsight = scores["hindsight optimum (knows the evaluation window)"]
    assert hindsight["cpu_violation_rate"] <= vpa["cpu_violation_rate"]
    assert hindsight["cpu_slack"] <= vpa["cpu_slack"]


def test_profiles_trade_slack_for_violations_in_order(week_4: dict):
    scores = week_4["scores"]
    by_profile = [scores[f"capacity_pipelines ({p})"] for p in ("conservative", "balanced",
                                                                   "aggressive")]  # fmt: skip
    rates = [s["cpu_violation_rate"] for s in by_profile]
    slack = [s["cpu_slack"] for s in by_profile]
    assert rates == sorted(rates) and slack == sorted(slack, reverse=True)
    # the schedule cuts slack without spending more of the violation budget than allowed
    constant, scheduled = scores["capacity_pipelines (balanced)"], scores[
        "capacity_pipelines (balanced) schedule"
    ]
    assert scheduled["cpu_slack"] < constant["cpu_slack"]
    rate = constant["cpu_violation_rate"]
    assert scheduled["cpu_violation_rate"] <= max(1.1 * rate, rate + 0.005)
    assert sum(week_4["choices"]["balanced"].values()) == 6  # one choice per VM
