"""Statuses of test runs and outcomes of test cases.

Declared once here; the CHECK constraints in sql/testing_framework_service list the same
values and a test keeps the two equal.
"""

from enum import StrEnum

__all__ = ["CaseOutcome", "TestRunStatus"]


class TestRunStatus(StrEnum):
    """Lifecycle of one run of a WorkflowTest (``test_runs.status``)."""

    __test__ = False  # not a pytest test class

    PENDING = "Pending"
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"
    ERROR = "Error"
    CANCELLED = "Cancelled"


class CaseOutcome(StrEnum):
    """Result of one test case (``test_case_results.outcome``)."""

    PASSED = "Passed"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    ERROR = "Error"
