"""The playbook (`assets/playbook.yaml`) and the team map (`assets/teams.yaml`), validated.

The playbook lists the kinds of action the platform may recommend, each with its effort and
risk priors; it is user-extendable, so it is validated on load and a bad file stops with one
line naming the file, the kind and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from capacity_pipelines.common.paths import ASSETS_DIR

DEFAULT_PLAYBOOK = ASSETS_DIR / "playbook.yaml"
DEFAULT_TEAMS = ASSETS_DIR / "teams.yaml"
# The finding producers findings/ implements (one module per source); a kind names one of them.
SOURCES = (
    "rightsizing_down",
    "rightsizing_up",
    "runway",
    "hpa",
    "bottleneck",
    "llm_saving",
    "quota",
)
CHANGE_TYPES = ("config", "code")
MAX_EFFORT_PRIOR = 8.0
# Settings the scoring needs, with the defaults used when the playbook leaves one out.
DEFAULT_SETTINGS = MappingProxyType(
    {
        "slo_breach_usd_month": 5000.0,
        "impact_scale_usd_month": 100000.0,
        "effort_point_usd": 1000.0,
        "code_effort_factor": 1.5,
        "min_impact_usd_month": 25.0,
        "reopen_change": 0.25,
        "min_bottleneck_probability": 0.5,
        "validation_min_days": 3.0,
        "validation_window_days": 7.0,
    }
)


class PlaybookError(ValueError):
    """The playbook or team map is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class ActionKind:
    """One kind of action: where its findings come from, its priors and its knobs."""

    name: str
    title: str
    source: str
    trigger: str
    impact: str
    effort_prior: float
    risk_prior: float
    change: str
    confidence: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Playbook:
    """All kinds, by name, and the scoring settings."""

    kinds: dict[str, ActionKind]
    settings: dict[str, float]
    path: str = ""

    def by_source(self, source: str) -> list[ActionKind]:
        """Kinds fed by one finding source, in file order."""
        return [k for k in self.kinds.values() if k.source == source]

    def kind(self, name: str) -> ActionKind:
        return self.kinds[name]


def _number(value: object, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlaybookError(f"{where}: expected a number, got {value!r}")
    if not low <= float(value) <= high:
        raise PlaybookError(f"{where}: {value} is outside [{low:g}, {high:g}]")
    return float(value)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise PlaybookError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlaybookError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PlaybookError(f"{path}: expected a mapping at the top level")
    return data


def load_playbook(path: str | Path | None = None) -> Playbook:
    """Read and validate a playbook (default: the bundled `assets/playbook.yaml`)."""
    path = Path(path) if path else DEFAULT_PLAYBOOK
    data = _read_yaml(path)
    settings = dict(DEFAULT_SETTINGS)
    for name, value in (data.get("settings") or {}).items():
        if name not in DEFAULT_SETTINGS:
            raise PlaybookError(f"{path}: settings.{name}: unknown setting")
        settings[name] = _number(value, f"{path}: settings.{name}", 0.0, 1e12)
    raw_kinds = data.get("kinds")
    if not isinstance(raw_kinds, dict) or not raw_kinds:
        raise PlaybookError(f"{path}: 'kinds' must be a non-empty mapping")
    kinds = {}
    for name, spec in raw_kinds.items():
        where = f"{path}: kinds.{name}"
        if not isinstance(spec, dict):
            raise PlaybookError(f"{where}: expected a mapping")
        for required in ("title", "source", "effort_prior", "risk_prior"):
            if required not in spec:
                raise PlaybookError(f"{where}: '{required}' is missing")
        if spec["source"] not in SOURCES:
            raise PlaybookError(
                f"{where}.source: {spec['source']!r} is not one of {', '.join(SOURCES)}"
            )
        change = spec.get("change", "config")
        if change not in CHANGE_TYPES:
            raise PlaybookError(f"{where}.change: {change!r} is not config or code")
        params = spec.get("params") or {}
        if not isinstance(params, dict):
            raise PlaybookError(f"{where}.params: expected a mapping")
        confidence = spec.get("confidence")
        kinds[str(name)] = ActionKind(
            name=str(name),
            title=str(spec["title"]),
            source=spec["source"],
            trigger=str(spec.get("trigger", "")),
            impact=str(spec.get("impact", "")),
            effort_prior=_number(
                spec["effort_prior"], f"{where}.effort_prior", 0.1, MAX_EFFORT_PRIOR
            ),
            risk_prior=_number(spec["risk_prior"], f"{where}.risk_prior", 0.0, 0.95),
            change=change,
            confidence=None
            if confidence is None
            else _number(confidence, f"{where}.confidence", 0.0, 1.0),
            params=params,
        )
    return Playbook(kinds=kinds, settings=settings, path=str(path))


@dataclass(frozen=True)
class Owner:
    """Who owns a service, and how much an outage of it matters."""

    team: str
    criticality: float  # 1 (internal tool) .. 3 (user-facing, revenue)
    blast_radius: float  # share of the fleet hurt when it breaks, 0..1


@dataclass(frozen=True)
class Teams:
    """Namespace and service -> owner, with defaults for anything unlisted."""

    namespaces: dict[str, Owner]
    services: dict[str, Owner]
    default: Owner

    def owner(self, namespace: str | None, service: str | None) -> Owner:
        key = f"{namespace}/{service}"
        if key in self.services:
            return self.services[key]
        return self.namespaces.get(namespace or "", self.default)


def _owner(spec: object, where: str, fallback: Owner) -> Owner:
    if not isinstance(spec, dict):
        raise PlaybookError(f"{where}: expected a mapping")
    return Owner(
        team=str(spec.get("team", fallback.team)),
        criticality=_number(spec.get("criticality", fallback.criticality), where, 1.0, 3.0),
        blast_radius=_number(spec.get("blast_radius", fallback.blast_radius), where, 0.0, 1.0),
    )


def load_teams(path: str | Path | None = None) -> Teams:
    """Read the team map (default `assets/teams.yaml`; absent file: everything `unassigned`)."""
    path = Path(path) if path else DEFAULT_TEAMS
    fallback = Owner(team="unassigned", criticality=2.0, blast_radius=0.2)
    if not path.exists():
        return Teams(namespaces={}, services={}, default=fallback)
    data = _read_yaml(path)
    default = _owner(data.get("default") or {}, f"{path}: default", fallback)
    namespaces = {
        str(ns): _owner(spec, f"{path}: namespaces.{ns}", default)
        for ns, spec in (data.get("namespaces") or {}).items()
    }
    services = {}
    for key, spec in (data.get("services") or {}).items():
        namespace = str(key).split("/", 1)[0]
        services[str(key)] = _owner(
            spec, f"{path}: services.{key}", namespaces.get(namespace, default)
        )
    return Teams(namespaces=namespaces, services=services, default=default)
