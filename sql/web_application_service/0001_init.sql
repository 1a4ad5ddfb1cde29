-- Web application: the dashboard's UI components (pages, panels, charts), versioned.

CREATE SCHEMA web_application_service;
COMMENT ON SCHEMA web_application_service IS
    'Owned by the web_application component; no other component reads or writes it.';
REVOKE ALL ON SCHEMA web_application_service FROM PUBLIC;

CREATE FUNCTION web_application_service.forbid_version_change() RETURNS trigger
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

CREATE TABLE web_application_service.ui_components (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text        NOT NULL CONSTRAINT ui_components_name_identifier CHECK (name ~ '^[a-z][a-z0-9_.-]{0,127}$'),
    version     integer     NOT NULL CONSTRAINT ui_components_version_positive CHECK (version >= 1),
    kind        text        NOT NULL
        CONSTRAINT ui_components_kind_known CHECK (kind IN ('page', 'panel', 'chart', 'table', 'form')),
    spec        jsonb       NOT NULL CONSTRAINT ui_components_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    spec_hash   text        NOT NULL CONSTRAINT ui_components_spec_hash_sha256 CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz CONSTRAINT ui_components_deleted_after_created CHECK (deleted_at >= created_at),
    CONSTRAINT ui_components_one_row_per_version UNIQUE (name, version)
);
COMMENT ON TABLE web_application_service.ui_components IS
    'Dashboard building blocks (pages, panels, charts, tables, forms) and their configuration, one immutable row per version so a dashboard change can be rolled back. Global, not namespaced: the dashboard is one per installation.';
COMMENT ON COLUMN web_application_service.ui_components.kind IS
    'page, panel, chart, table or form (plait.web_application.states.UiComponentKind).';
COMMENT ON COLUMN web_application_service.ui_components.spec IS
    'Layout, data query and display options the dashboard renders.';
CREATE TRIGGER ui_components_immutable
    BEFORE UPDATE ON web_application_service.ui_components
    FOR EACH ROW EXECUTE FUNCTION web_application_service.forbid_version_change();
