"""Prints how many inputs the fuzz tests tried, by test, at the end of the run."""

from tests.fuzz.inputs import INPUTS


def pytest_terminal_summary(terminalreporter):
    if INPUTS:
        counts = ", ".join(f"{name}: {count}" for name, count in INPUTS.items())
        terminalreporter.write_line(f"fuzz: {sum(INPUTS.values())} inputs ({counts})")
