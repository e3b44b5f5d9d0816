"""Publishing folders people share: a user's files survive, nothing goes stale, modes follow the
umask, readers see whole files and whole folders, a crash keeps the previous publication, and no
path leaves its folder. The CLIs run as real subprocesses on real files."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from capacity_pipelines.common.files import (
    OWNERSHIP_MANIFEST,
    PublishError,
    publish_files,
    publish_folder,
    replaced_on_success,
)

MIB = 1024**2
START = dt.datetime(2025, 3, 3)
REPO = Path(__file__).resolve().parents[1]


def capacity(*argv: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    """The real `capacity` command in a child process with a known umask."""
    return subprocess.run(
        [sys.executable, "-m", "capacity_pipelines.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        umask=umask,
        timeout=300,
    )


def container_usage(container_ids: tuple[str, ...], days: float = 2) -> pl.DataFrame:
    """U rows every 15 min, a daily CPU swing and flat memory per container."""
    n = int(days * 96)
    index = np.arange(n)
    return pl.concat(
        [
            pl.DataFrame(
                {
                    "container_id": container_id,
                    "ts": [START + dt.timedelta(minutes=15 * int(i)) for i in index],
                    "cpu_cores": 0.3 + 0.1 * np.sin(2 * np.pi * index / 96) + 0.01 * k,
                    "memory_bytes": np.full(n, 400.0 * MIB),
                }
            )
            for k, container_id in enumerate(container_ids)
        ]
    )


def current_spec(container_ids: tuple[str, ...]) -> pl.DataFrame:
    """Generous current requests, so every container gets a patch that cuts them."""
    return pl.DataFrame(
        {
            "container_id": list(container_ids),
            "cpu_request": [2.0] * len(container_ids),
            "cpu_limit": [None] * len(container_ids),
            "memory_request": [2.0 * 1024**3] * len(container_ids),
            "memory_limit": [2.0 * 1024**3] * len(container_ids),
        },
        schema_overrides={"cpu_limit": pl.Float64},
    )


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` (folders as None), relative."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the commands ------------------------------------------------------------------------------


def test_rightsize_exports_keep_the_users_files_and_the_umask(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "NOTES.md").write_text("my notes on last week's rollout\n")
    ids = ("shop/api/app", "shop/worker/app")
    usage, spec = shared / "usage.parquet", shared / "spec.parquet"
    container_usage(ids).write_parquet(usage)
    current_spec(ids).write_parquet(spec)
    before = {"NOTES.md": (shared / "NOTES.md").read_bytes(), "usage.parquet": usage.read_bytes()}

    done = capacity(
        "rightsize", "--usage", str(usage), "--spec", str(spec),
        "--out", str(shared / "r.parquet"), "--exports", str(shared),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    for name, data in before.items():  # the input and the user's notes are still there
        assert (shared / name).read_bytes() == data, name
    assert sorted(p.name for p in (shared / "patches").iterdir()) == [
        "shop__api.yaml",
        "shop__worker.yaml",
    ]
    # what open() / mkdir() give under umask 022, not mkdtemp's 0700 or mkstemp's 0600
    assert mode(shared) == 0o755 and mode(shared / "patches") == 0o755
    for name in ("rightsizing.csv", "rightsizing.json", "rightsizing.md", "r.parquet"):
        assert mode(shared / name) == 0o644, name
    assert mode(shared / "patches" / "shop__api.yaml") == 0o644
    owned = json.loads((shared / OWNERSHIP_MANIFEST).read_text())["owners"]["rightsizing"]
    assert owned == {
        "files": ["rightsizing.csv", "rightsizing.json", "rightsizing.md"],
        "folders": ["patches"],
    }


def test_rightsize_exports_drop_a_workload_that_dropped_out(tmp_path: Path):
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "NOTES.md").write_text("kept")
    both, api_only = ("shop/api/app", "shop/worker/app"), ("shop/api/app",)
    for ids in (both, api_only):
        usage = tmp_path / f"usage-{len(ids)}.parquet"
        spec = tmp_path / f"spec-{len(ids)}.parquet"
        container_usage(ids).write_parquet(usage)
        current_spec(ids).write_parquet(spec)
        done = capacity(
            "rightsize", "--usage", str(usage), "--spec", str(spec),
            "--out", str(tmp_path / "r.parquet"), "--exports", str(exports),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert sorted(tree(exports)) == [
        OWNERSHIP_MANIFEST,
        "NOTES.md",
        "patches",
        "patches/shop__api.yaml",
        "rightsizing.csv",
        "rightsizing.json",
        "rightsizing.md",
    ]
    assert pl.read_csv(exports / "rightsizing.csv")["container_id"].to_list() == ["shop/api/app"]


def _token_usage() -> pl.DataFrame:
    ts = [dt.datetime(2025, 9, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=5 * i) for i in range(24)]
    return pl.DataFrame(
        {
            "ts": ts,
            "provider": ["openai"] * 24,
            "model": ["gpt-4o"] * 24,
            "agent": ["planner", "coder"] * 12,
            "input_tokens": [1_000] * 24,
            "output_tokens": [200] * 24,
        }
    )


def test_token_cost_report_dir_keeps_the_input_and_the_users_files(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    usage = shared / "usage.parquet"
    _token_usage().write_parquet(usage)
    (shared / "NOTES.md").write_text("budget meeting on Friday\n")
    (shared / "spend_by_agent.csv.bak").write_text("an old copy the user keeps\n")
    before = {p.name: p.read_bytes() for p in shared.iterdir()}

    done = capacity(
        "token-cost", "--usage", str(usage), "--out", str(shared / "costed.parquet"),
        "--report-dir", str(shared),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    for name, data in before.items():
        assert (shared / name).read_bytes() == data, name
    assert (shared / "summary.json").is_file() and (shared / "spend_by_agent.csv").is_file()
    assert mode(shared) == 0o755
    assert mode(shared / "summary.json") == 0o644 and mode(shared / "costed.parquet") == 0o644
    # a second report with no agent column: the agent tables it no longer writes are removed
    _token_usage().drop("agent").write_parquet(usage)
    done = capacity(
        "token-cost", "--usage", str(usage), "--out", str(shared / "costed.parquet"),
        "--report-dir", str(shared),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (shared / "spend_by_agent.csv").exists()
    assert (shared / "spend_by_agent.csv.bak").exists() and (shared / "NOTES.md").exists()


def test_data_quality_report_leaves_the_weekly_reports_files_in_latest(tmp_path: Path):
    from capacity_pipelines.ingest.coverage import write_data_quality_report

    latest = tmp_path / "latest"
    publish_files(latest, {"capacity_report.html": "<p>week</p>"}, owner="weekly_report")
    coverage = pl.DataFrame({"table": ["container_usage"], "rows": [10], "mean_coverage": [0.9]})
    write_data_quality_report(coverage, latest, source="snap.duckdb")
    write_data_quality_report(coverage, latest, source="snap.duckdb")
    assert (latest / "capacity_report.html").read_text() == "<p>week</p>"
    owners = json.loads((latest / OWNERSHIP_MANIFEST).read_text())["owners"]
    assert owners["data_quality"]["files"] == ["data_quality.json", "data_quality.md"]
    assert owners["weekly_report"]["files"] == ["capacity_report.html"]


# -- the mechanism -----------------------------------------------------------------------------


def test_only_the_owners_previous_files_are_replaced_or_removed(tmp_path: Path):
    folder = tmp_path / "out"
    publish_files(folder, {"a.csv": "1", "sub/b.csv": "2"}, owner="me")
    (folder / "sub" / "mine.txt").write_text("user")
    publish_files(folder, {"c.csv": "3"}, owner="someone-else")
    publish_files(folder, {"a.csv": "new"}, owner="me")
    assert tree(folder) == {
        OWNERSHIP_MANIFEST: (folder / OWNERSHIP_MANIFEST).read_bytes(),
        "a.csv": b"new",
        "c.csv": b"3",
        "sub": None,
        "sub/mine.txt": b"user",
    }
    publish_files(folder, {}, owner="me")
    assert not (folder / "a.csv").exists() and (folder / "c.csv").exists()


def test_a_failed_publish_keeps_the_previous_files_complete(tmp_path: Path):
    folder = tmp_path / "out"
    publish_files(folder, {"a.csv": "old a", "b.csv": "old b", "p/x.yaml": "x"}, owner="me",
                  whole_folders=["p"])  # fmt: skip
    before = tree(folder)

    def broken(path: Path) -> None:
        path.write_text("half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish_files(folder, {"a.csv": "new a", "b.csv": broken, "p/y.yaml": "y"}, owner="me",
                      whole_folders=["p"])  # fmt: skip
    # content is written before anything is renamed: the previous publication is untouched
    assert tree(folder) == before


CRASHING_PUBLISHER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from capacity_pipelines.common.files import publish_files

    def die(path):
        path.write_text("half")
        os._exit(9)  # killed mid-publish: no cleanup, no finally

    publish_files(Path(sys.argv[1]), {"a.csv": "new a", "b.csv": die, "c.csv": "new c"},
                  owner="me", whole_folders=["p"])
    """
)


def test_a_killed_publisher_leaves_the_previous_publication_and_its_leftovers_go(tmp_path):
    folder = tmp_path / "out"
    publish_files(folder, {"a.csv": "old a", "b.csv": "old b", "p/x.yaml": "x"}, owner="me",
                  whole_folders=["p"])  # fmt: skip
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_PUBLISHER, str(folder)], cwd=REPO, check=False
    )
    assert child.returncode == 9
    names = set(tree(folder))
    for name, text in (("a.csv", "old a"), ("b.csv", "old b"), ("p/x.yaml", "x")):
        assert (folder / name).read_text() == text, name  # the previous publication, whole
    leftovers = [n for n in names if n.endswith(".capacity-staging")]
    assert len(leftovers) == 3  # staged p/, a.csv and the half-written b.csv
    # the manifest written before the files lists everything that may have appeared
    owned = json.loads((folder / OWNERSHIP_MANIFEST).read_text())["owners"]["me"]
    assert set(owned["files"]) >= {"a.csv", "b.csv", "c.csv"}
    publish_files(folder, {"a.csv": "a"}, owner="me")
    assert set(tree(folder)) == {OWNERSHIP_MANIFEST, "a.csv"}


def test_readers_never_see_a_folder_mixed_or_missing(tmp_path: Path):
    folder = tmp_path / "out"
    sets = [{f"p/{k}{i}.yaml": k for i in range(5)} for k in ("a", "b")]
    publish_files(folder, sets[0], owner="me", whole_folders=["p"])
    expected = [sorted(p.removeprefix("p/") for p in s) for s in sets]
    seen, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(sorted(os.listdir(folder / "p")))
            except FileNotFoundError:
                seen.append(None)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(100):
            publish_files(folder, sets[i % 2], owner="me", whole_folders=["p"])
    finally:
        stop.set()
        reader.join()
    # A reader that looked the folder up just before a swap lists the previous folder while it
    # is being removed: a part of the old set, never a mix of old and new, never no folder.
    mixed = [s for s in seen if s is None or not any(set(s) <= set(e) for e in expected)]
    assert seen and not mixed, mixed[:3]
    assert sum(s in expected for s in seen) > len(seen) / 2


@pytest.mark.parametrize(
    "name",
    ["../escape.csv", "/tmp/abs.csv", "a/../../b.csv", "a//b.csv", "", ".", "x" * 300,
     "nul\x00.csv", OWNERSHIP_MANIFEST],
)  # fmt: skip
def test_names_that_would_leave_the_folder_are_refused(tmp_path: Path, name: str):
    folder = tmp_path / "deep" / "out"
    with pytest.raises(PublishError):
        publish_files(folder, {name: "x"}, owner="me")
    assert not (tmp_path / "escape.csv").exists() and not (tmp_path / "deep" / "b.csv").exists()


def test_links_are_refused_not_followed_and_a_tampered_manifest_removes_nothing_outside(
    tmp_path: Path,
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "patches").symlink_to(outside)
    with pytest.raises(PublishError, match="link"):
        publish_files(folder, {"patches/x.yaml": "x"}, owner="me", whole_folders=["patches"])
    with pytest.raises(PublishError, match="link"):
        publish_files(folder, {"patches/x.yaml": "x"}, owner="me")
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    (folder / "patches").unlink()
    manifest = {"owners": {"me": {"files": ["../outside/victim.txt", "/etc/hostname"],
                                  "folders": ["..", "../outside"]}}}  # fmt: skip
    (folder / OWNERSHIP_MANIFEST).write_text(json.dumps(manifest))
    publish_files(folder, {"a.csv": "1"}, owner="me")
    assert (outside / "victim.txt").read_text() == "precious"


def test_publish_folder_swaps_a_week_whole_and_touches_no_sibling(tmp_path: Path):
    reports = tmp_path / "reports"
    publish_folder(reports / "2026-W42", {"r.html": "42"})
    publish_folder(reports / "2026-W43", {"r.html": "43", "csv/a.csv": "a"})
    publish_folder(reports / "2026-W43", {"r.html": "43 again"})
    assert tree(reports) == {
        "2026-W42": None,
        "2026-W42/r.html": b"42",
        "2026-W43": None,
        "2026-W43/r.html": b"43 again",
    }


def test_replaced_on_success_gives_the_umask_mode(tmp_path: Path):
    out = tmp_path / "out.parquet"
    previous = os.umask(0o027)
    try:
        with replaced_on_success(out) as tmp:
            tmp.write_bytes(b"data")
    finally:
        os.umask(previous)
    assert mode(out) == 0o640 and out.read_bytes() == b"data"
