"""report.html as a person sees it: headless Chromium renders it offline, the charts (frontier, accuracy deltas with
CI bars, speed by batch size) have ink where they should, and the browser logs no error. make test installs
Debian's chromium where it is missing."""

import shutil
import subprocess

import pytest

from optkit.report.html import H, W, render_html
from tests.unit.test_report import rich_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def test_report_renders_in_chromium_with_a_drawn_chart(tmp_path):
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is missing; make test installs it (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_html(rich_report("int4", "int8")))
    shot = tmp_path / "shot.png"
    run = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,2000",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), run.stderr[-2000:]
    console = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console
    dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="point"') == 3 and "Ship int8" in dom
    assert dom.count('class="series"') == 3 and dom.count('class="delta-chart"') == 2
    image = Image.open(shot).convert("L")
    assert image.size == (1000, 2000)
    dark = sum(1 for px in image.getdata() if px < 128)
    assert dark > 5000, "the page should show text, table and chart"
    # the chart's plotting area (below the headline) must contain dark marks: axes, points, labels
    chart_box = image.crop((0, 250, W + 60, 250 + H + 200))
    assert sum(1 for px in chart_box.getdata() if px < 128) > 500
    # below it, the accuracy-delta panels and the batch-size curve: more ink than text alone would leave
    below = image.crop((0, 250 + H + 200, W + 60, 2000))
    assert sum(1 for px in below.getdata() if px < 128) > 2000
    image.save(tmp_path / "seen.png")
