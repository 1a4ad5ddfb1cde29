-- The dashboard's built-in components, version 1 of each: the overview page and its panels
-- (charts and tables over the observability views and the event queue's metrics).
-- plait.web_application.builtin lists the same specs; a test keeps the two equal and the
-- hashes those of the specs' canonical JSON.

INSERT INTO web_application_service.ui_components (name, version, kind, spec, spec_hash) VALUES
    ('overview', 1, 'page', '{"panels":["runs-per-minute","workflow-failure-rates","slowest-tasks","task-overhead","event-queue-depth","event-queue-lag"],"title":"Overview"}'::jsonb,
     '7b50e01790c3aa340e4f8662eed2b51c95584d0b7d00e3428f4682bf94759fb3'),
    ('runs-per-minute', 1, 'chart', '{"layout":{"order":10,"width":2},"timeSeries":{"series":"outcome"},"title":"Runs finished per minute (last hour), by outcome","view":"workflow_runs"}'::jsonb,
     '5692b48fb7dcb85f65faf01d30d6b8b17db92ba6e28a04a03e7cf711ffec10a1'),
    ('workflow-failure-rates', 1, 'table', '{"columns":["namespace","workflow","runs","failed","failure_rate","p95_seconds"],"layout":{"order":20},"orderBy":"failure_rate","title":"Failure rates (last 7 days)","view":"workflow_failure_rates"}'::jsonb,
     '2ca82c20f93126062a79d2956fa8df2fba402f27d6fedfc905b0a6f1cf2c7e0f'),
    ('slowest-tasks', 1, 'table', '{"columns":["namespace","workflow","task","attempts","p95_seconds","max_seconds"],"layout":{"order":30},"orderBy":"p95_seconds","title":"Slowest tasks (p95, last 7 days)","view":"slowest_tasks"}'::jsonb,
     '85d0d403e7064b79eb56e4e7d9847257d684714c7b2ceca9f84c01da85b2551f'),
    ('task-overhead', 1, 'chart', '{"layout":{"order":40},"orderBy":"overhead_share","title":"Plait''s share of task time, per workflow (last 7 days)","view":"task_overhead","x":"workflow","y":"overhead_share"}'::jsonb,
     'bc6a914b7f92f3d4f124b2726e69abc0a17db775155e7f2e56796f02cbe85623'),
    ('event-queue-depth', 1, 'chart', '{"layout":{"order":50},"metric":"plait_event_queue_depth","timeSeries":{},"title":"Event queue depth (last hour)"}'::jsonb,
     '246d83b361923739053ca3a193a81f611f70afda9b07d07763607f29f7629ac6'),
    ('event-queue-lag', 1, 'chart', '{"layout":{"order":60},"metric":"plait_event_queue_lag_seconds","timeSeries":{},"title":"Event queue lag, seconds (last hour)"}'::jsonb,
     'b17d34e1730b0d922f2b182754710fc722817166d83324ce9bac07fe441978bd')
ON CONFLICT (name, version) DO NOTHING;
