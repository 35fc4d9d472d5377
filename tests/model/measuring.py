"""The ``measured`` fixture of the GPU tests, without torch: tests/tools/test_gpu_check.py runs
test files that use it in pytest subprocesses, where importing torch would cost seconds each."""

import pytest


@pytest.fixture
def measured(record_property):
    """``measured(name, value)``: a number a case measured, printed (pytest -rA reports a passed
    test's output, a failed one's always) and recorded as a JUnit property."""
    def record(name: str, value) -> None:
        print(f"{name}: {value}")
        record_property(name, value)
    return record
