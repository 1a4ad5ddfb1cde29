-- Testing framework: versioned workflow tests, their runs and per-case results.

CREATE SCHEMA testing_framework_service;
COMMENT ON SCHEMA testing_framework_service IS
    'Owned by the testing_framework component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA testing_framework_service FROM PUBLIC;

CREATE FUNCTION testing_framework_service.forbid_version_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF (to_jsonb(NEW) - 'deleted_at') IS DISTINCT FROM (to_jsonb(OLD) - 'deleted_at') THEN
        RAISE EXCEPTION '%.% rows are immutable versions; only deleted_at may change',
            TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'check_violation',
                  HINT = 'store a changed spec as a new version';
    END IF;
    RETURN NEW;
END
$$;

CREATE TABLE testing_framework_service.test_definitions (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace      text        NOT NULL
        CONSTRAINT test_definitions_namespace_dns_label
        CHECK (namespace ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(namespace) <= 63),
    name           text        NOT NULL
        CONSTRAINT test_definitions_name_dns_subdomain
        CHECK (name ~ '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$' AND length(name) <= 253),
    version        integer     NOT NULL CONSTRAINT test_definitions_version_positive CHECK (version >= 1),
    workflow_name  text        NOT NULL,
    spec           jsonb       NOT NULL CONSTRAINT test_definitions_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    spec_hash      text        NOT NULL CONSTRAINT test_definitions_spec_hash_sha256 CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    k8s_uid        uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz CONSTRAINT test_definitions_deleted_after_created CHECK (deleted_at >= created_at),
    CONSTRAINT test_definitions_one_row_per_version UNIQUE (namespace, name, version)
);
COMMENT ON TABLE testing_framework_service.test_definitions IS
    'Every accepted spec of a WorkflowTest (the workflow under test, its cases: inputs, mocked task outputs, expectations), one immutable row per version.';
COMMENT ON COLUMN testing_framework_service.test_definitions.workflow_name IS
    'WorkflowDefinition under test (same namespace), copied out of the spec to list a workflow''s tests.';
COMMENT ON COLUMN testing_framework_service.test_definitions.spec_hash IS
    'sha256 (hex) of the spec as canonical JSON: detects "nothing changed" on re-apply.';
CREATE INDEX test_definitions_by_workflow
    ON testing_framework_service.test_definitions (namespace, workflow_name) WHERE deleted_at IS NULL;
CREATE TRIGGER test_definitions_immutable
    BEFORE UPDATE ON testing_framework_service.test_definitions
    FOR EACH ROW EXECUTE FUNCTION testing_framework_service.forbid_version_change();

CREATE TABLE testing_framework_service.test_runs (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace             text        NOT NULL,
    test_name             text        NOT NULL,
    test_version          integer     NOT NULL,
    status                text        NOT NULL DEFAULT 'Pending'
        CONSTRAINT test_runs_status_known
        CHECK (status IN ('Pending', 'Running', 'Passed', 'Failed', 'Error', 'Cancelled')),
    total_cases           integer     NOT NULL DEFAULT 0 CONSTRAINT test_runs_total_not_negative CHECK (total_cases >= 0),
    passed_cases          integer     NOT NULL DEFAULT 0 CONSTRAINT test_runs_passed_not_negative CHECK (passed_cases >= 0),
    failed_cases          integer     NOT NULL DEFAULT 0 CONSTRAINT test_runs_failed_not_negative CHECK (failed_cases >= 0),
    message               text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    CONSTRAINT test_runs_ran_a_version
        FOREIGN KEY (namespace, test_name, test_version)
        REFERENCES testing_framework_service.test_definitions (namespace, name, version),
    CONSTRAINT test_runs_counts_add_up CHECK (passed_cases + failed_cases <= total_cases),
    CONSTRAINT test_runs_finished_iff_final
        CHECK ((finished_at IS NOT NULL) = (status IN ('Passed', 'Failed', 'Error', 'Cancelled'))),
    CONSTRAINT test_runs_finished_after_started CHECK (finished_at >= started_at),
    CONSTRAINT test_runs_passed_means_no_failures CHECK (status <> 'Passed' OR failed_cases = 0)
);
COMMENT ON TABLE testing_framework_service.test_runs IS
    'One execution of one version of a WorkflowTest. The caller chooses the id (e.g. the uid of the run''s resource), which makes starting a run idempotent.';
COMMENT ON COLUMN testing_framework_service.test_runs.status IS
    'Pending, Running, Passed, Failed, Error or Cancelled (plait.testing_framework.states.TestRunStatus).';
COMMENT ON COLUMN testing_framework_service.test_runs.total_cases IS
    'Counts are a summary kept with the run so listing runs never counts test_case_results.';
CREATE INDEX test_runs_keyset
    ON testing_framework_service.test_runs (namespace, test_name, created_at DESC, id DESC);
COMMENT ON INDEX testing_framework_service.test_runs_keyset IS
    'Keyset pagination of a test''s runs, newest first; its prefix also serves the foreign key to test_definitions.';

CREATE TABLE testing_framework_service.test_case_results (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    test_run_id           uuid        NOT NULL
        REFERENCES testing_framework_service.test_runs (id) ON DELETE CASCADE,
    case_name             text        NOT NULL CONSTRAINT test_case_results_case_name_nonempty CHECK (case_name <> ''),
    outcome               text        NOT NULL
        CONSTRAINT test_case_results_outcome_known CHECK (outcome IN ('Passed', 'Failed', 'Skipped', 'Error')),
    message               text,
    details               jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT test_case_results_details_object CHECK (jsonb_typeof(details) = 'object'),
    workflow_instance_id  uuid,
    duration_ms           bigint      CONSTRAINT test_case_results_duration_not_negative CHECK (duration_ms >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT test_case_results_one_per_case UNIQUE (test_run_id, case_name)
);
COMMENT ON TABLE testing_framework_service.test_case_results IS
    'The outcome of each case of a run; one row per (run, case), so re-reporting a case is idempotent.';
COMMENT ON COLUMN testing_framework_service.test_case_results.outcome IS
    'Passed, Failed, Skipped or Error (plait.testing_framework.states.CaseOutcome).';
COMMENT ON COLUMN testing_framework_service.test_case_results.details IS
    'Expected and actual values of failed assertions, for the report.';
COMMENT ON COLUMN testing_framework_service.test_case_results.workflow_instance_id IS
    'workflow_orchestrator_service.workflow_instances.id the case ran as (no foreign key: another component''s schema).';
