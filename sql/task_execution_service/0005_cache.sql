-- Task caching: an attempt of a task with a cache key records the key's digest; a later
-- attempt with the same digest in the namespace, within the task's time to live, reuses
-- the newest successful one's outputs instead of running a Job, and says which it reused.

ALTER TABLE task_execution_service.task_instances
    ADD COLUMN cache_key text,
    ADD COLUMN cached_from uuid
        REFERENCES task_execution_service.task_instances (id) ON DELETE SET NULL,
    ADD CONSTRAINT task_instances_cache_key_sha256
        CHECK (cache_key ~ '^[0-9a-f]{64}$'),
    ADD CONSTRAINT task_instances_cached_only_when_succeeded
        CHECK (cached_from IS NULL OR state = 'Succeeded');
COMMENT ON COLUMN task_execution_service.task_instances.cache_key IS
    'SHA-256 (hex) of the namespace and the value of the task''s cache.key for this attempt; null for a task without cache.';
COMMENT ON COLUMN task_execution_service.task_instances.cached_from IS
    'The attempt whose outputs this one reused (a cache hit: no Job ran); null when it ran, or when that attempt has since been deleted by retention.';
CREATE INDEX task_instances_cache
    ON task_execution_service.task_instances (namespace, cache_key, finished_at DESC)
    WHERE state = 'Succeeded' AND cache_key IS NOT NULL;
COMMENT ON INDEX task_execution_service.task_instances_cache IS
    'A cache lookup finds the newest successful attempt with a key without scanning the others.';
