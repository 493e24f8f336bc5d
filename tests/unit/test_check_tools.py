"""`make check-tools` on a machine that lacks things: one line per missing tool naming the install command,
failing only for what the set-up cannot do without (the compilers, unless the llama.cpp wheel is built)."""

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = ROOT / "build-support" / "check-tools.sh"


def _check(bin_dir, *args):
    bash = shutil.which("bash")
    return subprocess.run([bash, str(SCRIPT), *args], env={"PATH": str(bin_dir)}, capture_output=True, text=True,
                          timeout=60)


def _tool(bin_dir, name, target="/bin/true"):
    os.symlink(target, bin_dir / name)


def test_a_machine_with_python_alone_is_told_what_to_install(tmp_path):
    _tool(tmp_path, "python3", os.path.realpath(sys.executable))
    run = _check(tmp_path)
    lines = run.stderr.splitlines()
    assert run.returncode == 1
    assert any("missing: a C compiler" in ln and "apt-get install build-essential" in ln for ln in lines)
    assert any("missing: a C++ compiler" in ln and "apt-get install g++" in ln for ln in lines)
    assert any(ln.startswith("check-tools: note: no cmake") and "PyPI" in ln for ln in lines)  # not a failure
    assert any("note: no chromium" in ln and "apt-get install chromium" in ln for ln in lines)
    assert not any("Python" in ln for ln in lines)
    assert _check(tmp_path, "--wheel-cached").returncode == 0  # a built wheel needs no compiler
    _tool(tmp_path, "cc")
    _tool(tmp_path, "c++")
    run = _check(tmp_path)
    assert run.returncode == 0 and "missing" not in run.stderr


def test_no_python_or_no_venv_fails(tmp_path):
    for name in ("cc", "c++", "cmake", "chromium"):
        _tool(tmp_path, name)
    run = _check(tmp_path)
    assert run.returncode == 1 and "missing: Python 3.10 or newer" in run.stderr
    (tmp_path / "python3").write_text("#!/bin/sh\ncase \"$*\" in *ensurepip*) exit 1;; esac\nexit 0\n")
    (tmp_path / "python3").chmod(0o755)  # a Debian python3 without python3-venv
    run = _check(tmp_path)
    assert run.returncode == 1 and run.stderr.strip() == ("check-tools: missing: Python's venv module (make setup "
                                                          "creates .venv); install it: apt-get install python3-venv")


def test_setup_and_test_check_the_tools_first():
    make = (ROOT / "Makefile").read_text()
    assert "\nsetup: check-tools\n" in make and "\ntest: check-tools\n" in make
