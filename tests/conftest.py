"""Rules the whole suite keeps (docs/testing.md):

- No test is skipped silently. A skip is accepted only for a reason listed in
  :data:`ACCEPTED_SKIPS` (a GPU-only test on a machine without a GPU); any other skip fails the
  run, and every skip is listed in the summary (``-rs``).
- Tests under ``tests/integration`` carry the ``integration`` marker (they talk to real engines)
  and unit tests do not: a file that breaks this stops the collection.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mistral_serve.engines.gpus import visible_gpus

INTEGRATION = Path(__file__).parent / "integration"
#: The reasons a test may be skipped for: a test marked ``gpu`` on a machine without a GPU.
GPU_ONLY = "GPU-only: no NVIDIA GPU is visible here (nvidia-smi lists none)"
ACCEPTED_SKIPS = frozenset({GPU_ONLY})


class SkipPolicy:
    """Fails a run that skipped a test for a reason not in :data:`ACCEPTED_SKIPS`."""

    def __init__(self) -> None:
        self.unaccepted: list[str] = []

    def _note(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        if reason not in ACCEPTED_SKIPS:
            self.unaccepted.append(f"{report.nodeid}: {reason}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unaccepted and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.unaccepted:
            terminalreporter.section("skips not accepted (tests/conftest.py): the run fails")
            for line in self.unaccepted:
                terminalreporter.line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(), "skip-policy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = [
        item.nodeid
        for item in items
        if (item.get_closest_marker("integration") is not None)
        != item.path.is_relative_to(INTEGRATION)
    ]
    if misplaced:
        raise pytest.UsageError(
            "the integration marker belongs to the tests under tests/integration, and only "
            f"to them (pytestmark = pytest.mark.integration): {', '.join(misplaced)}"
        )
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_tests and not visible_gpus(os.environ):
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason=GPU_ONLY))
