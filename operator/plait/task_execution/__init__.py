"""Task execution: task definitions, and task attempts run as Kubernetes Jobs.

Owns the ``task_execution_service`` schema; :mod:`.repository` is its only SQL.
"""

from plait.task_execution.states import FINAL_STATES, TaskState

__all__ = ["FINAL_STATES", "TaskState"]
