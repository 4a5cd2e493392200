"""Repository-wide pytest hooks: per-notebook wall time for the nbval run.

nbval turns every notebook cell into a test item; this plugin adds the items'
times up per notebook and prints them at the end, so the chapters' run-time
budgets are visible in every test run (and in CI's log).
"""

from __future__ import annotations

from collections import defaultdict

_NB_TIMES: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _NB_TIMES[path] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _NB_TIMES:
        return
    terminalreporter.section("notebook execution time")
    for path, seconds in sorted(_NB_TIMES.items()):
        terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
    terminalreporter.write_line(f"{sum(_NB_TIMES.values()):8.1f} s  total")
