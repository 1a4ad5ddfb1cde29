-- The labels index answers the run list's label filter at once: new entries go straight
-- into the index instead of its pending list (fastupdate), which every search would scan
-- until the next vacuum merged it (runs created in bulk made a rare label's page slow).
-- A run's insert pays the index update itself, once per run.

ALTER INDEX workflow_orchestrator_service.workflow_instances_labels SET (fastupdate = off);
