"""Workflow orchestrator: definitions and instances, the DAG engine, triggers, subscriptions.

Owns the ``workflow_orchestrator_service`` schema; :mod:`.repository` is its only SQL.
"""

from plait.workflow_orchestrator.states import FINAL_PHASES, SubscriptionStatus, WorkflowPhase

__all__ = ["FINAL_PHASES", "SubscriptionStatus", "WorkflowPhase"]
