"""Risk profiles: how much CPU contention and memory risk a team accepts for how much slack.

Every request trades idle capacity (slack, paid for) against samples above the request (CPU
contention; for memory, an OOM kill). A profile states that trade-off as numbers the backtest can
hold the recommender to, instead of hiding it in a fixed percentile:

- `cpu_quantile`: the percentile of each pod's recent samples the CPU request covers. Each
  container's backtest chooses how to read it (a 3-day or 1-day recency half-life, or raised by
  its own trend: `candidates.profile_candidates`); without a backtest, the 3-day one plus a
  low-confidence margin.
- `cpu_violation_target`: the share of CPU samples above the request, pooled over the fleet, that
  the per-container choice aims at on the containers' own past weeks (the backtest): one price
  of a violation for the whole fleet, so the budget is spent where it is cheap
  (see `backtest.choose_recommenders`).
- `cpu_container_violation_cap`: no single container's backtest may exceed this share, so the
  budget is not spent by starving one service.
- `memory_margin`: headroom above the window's peak working set ON TOP of the worst growth the
  container's own backtest showed (a peak a week later / the peak before it). OOM kills are
  not traded: every profile sizes memory above every backtested peak; the profiles differ in
  how much unseen growth they insure against.

The numbers below were chosen on the Bitbrains VMs and reported on the Alibaba machines
(`benchmarks/results/rightsizing.md`), never per file.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PROFILE = "balanced"


@dataclass(frozen=True)
class RiskProfile:
    """One point of the slack / risk trade-off (see the module docstring)."""

    name: str
    cpu_violation_target: float
    cpu_container_violation_cap: float
    memory_margin: float
    cpu_quantile: float
    description: str

    def describe(self) -> str:
        """One line for rationales: the profile and its targets."""
        return (
            f"profile {self.name} (CPU p{self.cpu_quantile * 100:g}, <= "
            f"{self.cpu_violation_target:.0%} of samples above; memory +{self.memory_margin:.0%}"
            " over backtested growth)"
        )


PROFILES: dict[str, RiskProfile] = {
    profile.name: profile
    for profile in (
        RiskProfile(
            name="conservative",
            # about KRR's p95-of-14-days outcome on a steady fleet, with KRR's 15 % memory buffer
            cpu_violation_target=0.01,
            cpu_container_violation_cap=0.03,
            memory_margin=0.15,
            cpu_quantile=0.99,
            description="latency-critical services: few CPU samples above the request, KRR's "
            "15 % memory buffer above the backtested growth",
        ),
        RiskProfile(
            name="balanced",
            cpu_violation_target=0.03,
            cpu_container_violation_cap=0.10,
            # half of KRR's buffer: room for the growth the backtest adds, so the fleet's
            # memory stays at or below KRR's peak + 15 %
            memory_margin=0.08,
            cpu_quantile=0.95,
            description="the default: fewer CPU samples above the request than the VPA's p90 + "
            "15 %, memory no higher than KRR's on a fleet without growth",
        ),
        RiskProfile(
            name="aggressive",
            cpu_violation_target=0.08,
            cpu_container_violation_cap=0.25,
            memory_margin=0.03,
            cpu_quantile=0.90,
            description="batch and best-effort work: requests near typical use, bursts run on "
            "the node's spare CPU",
        ),
    )
}


def risk_profile(name: str) -> RiskProfile:
    """The profile called `name`; a ValueError lists the valid names otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown risk profile {name!r} (expected one of {', '.join(PROFILES)})"
        ) from None
