"""The suite's own rules (tests/conftest.py), run on small suites of their own: a skip without an
accepted reason fails the run, a GPU-only test skips with the accepted reason where there is no
GPU, and the integration marker goes with the integration folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mistral_serve.engines.gpus import visible_gpus
from tests.conftest import GPU_ONLY

RULES = Path(__file__).parents[1] / "conftest.py"


def run_suite(folder: Path, **files: str) -> subprocess.CompletedProcess[str]:
    """pytest over ``files`` (name → source; ``integration__x`` is integration/x) in
    ``folder``, under the suite's rules."""
    shutil.copy(RULES, folder / "conftest.py")
    (folder / "integration").mkdir(exist_ok=True)
    for name, source in files.items():
        (folder / f"{name.replace('__', '/')}.py").write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(folder)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_only_an_accepted_reason_lets_a_run_with_skips_pass(tmp_path):
    done = run_suite(
        tmp_path,
        test_skips="""
            import pytest

            def test_runs():
                pass

            def test_skips():
                pytest.skip("the service was not there")

            @pytest.mark.gpu
            def test_reads_the_gpu():
                pass
        """,
    )
    assert done.returncode == 1, done.stdout
    unaccepted = done.stdout.split("skips not accepted")[1]
    assert "test_skips.py::test_skips: the service was not there" in unaccepted
    assert "test_reads_the_gpu" not in unaccepted
    if visible_gpus(os.environ):
        assert "2 passed, 1 skipped" in done.stdout
    else:  # skipped, with the one accepted reason, and listed
        assert f"SKIPPED [1] test_skips.py:10: {GPU_ONLY}" in done.stdout
        assert "1 passed, 2 skipped" in done.stdout


def test_the_integration_marker_goes_with_the_integration_folder(tmp_path):
    done = run_suite(
        tmp_path,
        integration__test_unmarked="def test_engine():\n    pass\n",
        test_misplaced="""
            import pytest

            pytestmark = pytest.mark.integration

            def test_unit():
                pass
        """,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout
    assert "integration/test_unmarked.py::test_engine" in done.stderr
    assert "test_misplaced.py::test_unit" in done.stderr
