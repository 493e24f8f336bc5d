"""One writer per run folder: a second run on a folder in use is refused with exit 2 and one line naming the
folder and the other process's pid; the lock of a process that died (kill -9) is gone with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optkit.errors import BadInput

HOLDER = """\
import sys, time
from pathlib import Path
from optkit.runlock import hold
with hold(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(300)
"""


def holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path, tiny_model, text_file):
    """Two `optkit run` on one folder: the second stops at once, naming the folder and the first one's pid."""
    from click.testing import CliRunner

    from optkit.cli import main
    from tests.conftest import optkit_cli

    run_dir = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\nmodel: {{checkpoint: {tiny_model}}}\nvariants: [{{name: base}}, {{name: slow}}]\n"
                      f"eval: {{perplexity: {{path: {text_file}, max_tokens: 32}}, fidelity: null}}\nbench: null\n")
    first = subprocess.Popen([sys.executable, "-m", "optkit", "run", str(recipe), "-o", str(run_dir)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        end = time.time() + 300
        while not (run_dir / "plan.json").exists() and time.time() < end:  # the first run is under way
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended before the second could meet it"
        before = sorted(p.name for p in run_dir.rglob("*"))
        result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(run_dir)])
        assert result.exit_code == 2, result.output[-2000:]
        [line] = [ln for ln in result.output.splitlines() if ln.startswith("optkit: error")]
        assert f"run folder {run_dir} is in use by another optkit run (pid {first.pid})" in line and "--out" in line
        assert first.poll() is None  # the first run goes on, its folder untouched by the second
        assert set(before) <= set(p.name for p in run_dir.rglob("*"))
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert optkit_cli("report", str(run_dir)).returncode == 2  # killed before its report: nothing half-written


def test_the_lock_of_a_killed_run_is_never_stale(tmp_path):
    from optkit.runlock import hold

    run_dir = tmp_path / "run"
    other = holder(run_dir)
    with pytest.raises(BadInput, match=f"pid {other.pid}"):
        with hold(run_dir):
            pass
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    start = time.time()
    with hold(run_dir):  # the kernel dropped the dead process's lock: no stale lock to clean by hand
        assert (run_dir / ".optkit.lock").read_text().strip() == str(os.getpid())
    assert time.time() - start < 5


def test_an_output_path_that_is_a_file_or_too_long_is_bad_input(tmp_path):
    from optkit.runlock import hold

    existing = tmp_path / "report.txt"
    existing.write_text("not a folder")
    with pytest.raises(BadInput, match="is an existing file; pass a folder with --out"):
        with hold(existing):
            pass
    with pytest.raises(BadInput, match="its name is too long for the file system; pass another --out"):
        with hold(tmp_path / ("x" * 300)):
            pass
