"""Project hygiene: the README's commands, CI, lint, and the static assets folder."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from capacity_pipelines.common.paths import REPO_ROOT


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", section, flags=re.S)


def test_readme_gives_two_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    demo, tests = (c.strip() for c in commands)
    assert demo.endswith("capacity demo")
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run(
        [str(ruff), "check", "."], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_assets_folder_holds_no_python():
    assert not list((REPO_ROOT / "assets").rglob("*.py"))


def test_business_logic_does_not_import_dagster():
    """Dagster lives in the glue (`defs/`, `definitions.py`) and in the command that launches
    runs (`cli/`); every stage of the pipeline is plain Python."""
    package = REPO_ROOT / "capacity_pipelines"
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in package.rglob("*.py")
        if path.relative_to(package).parts[0] not in ("defs", "cli", "definitions.py")
        and re.search(r"^\s*(import dagster|from dagster)", path.read_text(), flags=re.M)
    ]
    assert offenders == []


# What each stage may import (docs/architecture.md): lower stages never import higher ones.
STAGE_IMPORTS = {
    "common": set(),
    "warehouse": {"common"},
    "ingest": {"common", "warehouse"},
    "forecasting": {"common", "warehouse"},
    "bottlenecks": {"common", "warehouse"},
    "anomalies": {"common", "warehouse"},
    "rightsizing": {"common", "warehouse", "forecasting"},
    "tokens": {"common", "warehouse", "forecasting"},
    "recommendations": {"common", "warehouse", "ingest", "forecasting", "rightsizing", "tokens",
                        "bottlenecks", "anomalies"},
    "reporting": {"common", "warehouse", "ingest", "forecasting", "rightsizing", "tokens",
                  "bottlenecks", "recommendations", "anomalies"},
    "alerts": {"common", "warehouse", "ingest", "forecasting", "bottlenecks"},
}  # fmt: skip


def test_each_stage_imports_only_the_stages_below_it():
    package = REPO_ROOT / "capacity_pipelines"
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        stage = path.relative_to(package).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package.name):
                modules = [node.module] if node.module != package.name else [
                    f"{package.name}.{a.name}" for a in node.names
                ]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.startswith(package.name + ".")]
            for module in modules:
                target = module.split(".")[1]
                if target != stage:
                    found.setdefault(stage, set()).add(target)
    wrong = {
        stage: sorted(targets - STAGE_IMPORTS[stage])
        for stage, targets in found.items()
        if stage in STAGE_IMPORTS and targets - STAGE_IMPORTS[stage]
    }
    assert wrong == {}
    assert set(STAGE_IMPORTS) <= {p.name for p in package.iterdir() if p.is_dir()}


def test_every_third_party_import_of_the_package_is_a_declared_dependency():
    # CI installs the dev extras too, so a runtime import that only a dev extra (or a
    # dependency's dependency) provides passes the tests and breaks `capacity demo` on a plain
    # install: scikit-learn once did exactly that.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-")
        for d in project["dependencies"]
    }
    providers = importlib.metadata.packages_distributions()
    undeclared = set()
    for path in (REPO_ROOT / "capacity_pipelines").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "capacity_pipelines":
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
                if not dists & declared:
                    undeclared.add(f"{top} ({path.relative_to(REPO_ROOT)})")
    assert not undeclared, sorted(undeclared)
