"""Testing framework: WorkflowTests, their runs and the result of each case.

Owns the ``testing_framework_service`` schema; :mod:`.repository` is its only SQL.
"""

from plait.testing_framework.states import CaseOutcome, TestRunStatus

__all__ = ["CaseOutcome", "TestRunStatus"]
