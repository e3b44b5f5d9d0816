"""The published report, opened from disk by headless Chromium (the Debian `chromium` package).

Assertions are made on the DOM Chromium built (`--dump-dom`), not on the HTML source: the
sections, tables and charts a planner sees, the PNG charts decoded into images, and a
`<script>` label value present as text with no script element. A full-page screenshot is kept
as a test artifact (tests/artifacts/, or $CAPACITY_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from capacity_pipelines import warehouse as wh
from capacity_pipelines.reporting import gather_report, publish_report
from tests.test_weekly_report import AS_OF, EVIL, SECTION_KEYS, WEEK, build_snapshot

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.skip("needs the Debian chromium package (apt-get install -y chromium); CI installs it")


class _Dom(HTMLParser):
    """What the rendered DOM holds: sections, tables, images, SVGs, scripts and visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.unavailable = 0
        self.tables = 0
        self.rows = 0
        self.png_images: list[str] = []
        self.svgs = 0
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section":
            self.sections.append(attributes.get("id", ""))
        elif tag == "table":
            self.tables += 1
        elif tag == "tr":
            self.rows += 1
        elif tag == "img" and (attributes.get("src") or "").startswith("data:image/png;base64,"):
            self.png_images.append(attributes["src"])
        elif tag == "svg":
            self.svgs += 1
        elif tag == "script":
            self.scripts += 1
        elif tag == "div" and "unavailable" in (attributes.get("class") or ""):
            self.unavailable += 1

    def handle_data(self, data):
        self.text.append(data)


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    chromium = _chromium()
    root = tmp_path_factory.mktemp("browser")
    snapshot = build_snapshot(root / "snap.duckdb")
    with wh.connect(snapshot, read_only=True) as con:
        report = gather_report(con, WEEK, source=str(snapshot), now=AS_OF)
    published = publish_report(report, root / "reports")
    url = published.html.resolve().as_uri()
    profile = ["--user-data-dir=" + str(root / "profile")]
    dumped = _run([chromium, *CHROMIUM_FLAGS, *profile, "--dump-dom", url], root)
    assert dumped.returncode == 0 and "<html" in dumped.stdout, dumped.stderr[-2000:]
    artifacts = Path(os.environ.get("CAPACITY_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "weekly_report.png"
    screenshot.unlink(missing_ok=True)
    shot = _run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            *profile,
            "--hide-scrollbars",
            "--window-size=1280,4000",
            f"--screenshot={screenshot}",
            url,
        ],
        root,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    print(f"screenshot of the rendered report: {screenshot}")
    dom = _Dom()
    dom.feed(dumped.stdout)
    return dom, screenshot


def test_rendered_page_has_every_section_table_and_chart(rendered):
    dom, _ = rendered
    assert dom.sections == SECTION_KEYS
    assert dom.unavailable == 0
    assert dom.tables >= 8 and dom.rows > 20
    assert len(dom.png_images) >= 2  # runway forecast and the LLM spend trend
    assert dom.svgs >= 1  # spend by agent
    text = " ".join(dom.text)
    for heading in ("Executive summary", "Capacity runway", "Bottleneck outlook", "Data quality"):
        assert heading in text
    assert "$12.3k/mo" in text and "1.5 cores" in text and "512Mi" in text


def test_script_label_is_shown_as_text_and_never_runs(rendered):
    dom, _ = rendered
    assert dom.scripts == 0
    assert EVIL in " ".join(dom.text)


def test_screenshot_is_a_full_page_png(rendered):
    _, screenshot = rendered
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 4000)
    assert len(data) > 100_000  # text, tables and charts, not a blank page
