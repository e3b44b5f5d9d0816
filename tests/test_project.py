"""Project hygiene: the README's commands, CI, lint, and the static assets folder."""

import re
import subprocess
import sys
from pathlib import Path

from capacity_pipelines.paths import REPO_ROOT


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
    package = REPO_ROOT / "capacity_pipelines"
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for path in package.rglob("*.py")
        if "defs" not in path.relative_to(package).parts
        and path.name not in ("definitions.py", "cli.py")
        and re.search(r"^\s*(import dagster|from dagster)", path.read_text(), flags=re.M)
    ]
    assert offenders == []
