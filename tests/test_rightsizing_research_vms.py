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


def test_recommender_violates_and_ooms_no_more_than_krr_and_vpa(shared_data: Path):
    bench = load_bench()
    if not bench.DATA.exists():
        pytest.skip(f"{bench.DATA} is absent")
    from capacity_pipelines.rightsizing.prices import load_compute_prices

    prices = load_compute_prices()
    price = prices.price()
    frame = bench.load_bitbrains()
    week = 7 * bench.DAY_S
    split = bench.run_split(
        frame, "weeks 1-3 / 4", 3 * week, 4 * week, lambda c, m: prices.monthly_usd(c, m, price)
    )
    scores = split["scores"]
    ours, krr, vpa = scores["capacity_pipelines"], scores["KRR simple"], scores["VPA recommender"]
    assert ours["cpu_violation_rate"] <= min(krr["cpu_violation_rate"], vpa["cpu_violation_rate"])
    assert ours["memory_oom_proxy"] <= min(krr["memory_oom_proxy"], vpa["memory_oom_proxy"])
    assert ours["usd_per_month"] < 0.5 * scores["current provisioning"]["usd_per_month"]
    # the hindsight optimum is a lower bound for constant requests at the same violation rate
    assert scores["hindsight optimum (knows the evaluation window)"]["cpu_slack"] <= min(
        krr["cpu_slack"], ours["cpu_slack"]
    )
