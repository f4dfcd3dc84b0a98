-- The schema ledger of this database: every shape of the entities a worker brought its tables
-- to (the build's `SCHEMA_LEDGER`, as `entities.lock` holds it), by schema version.
CREATE TABLE IF NOT EXISTS nomnom_schema_ledger (
    version TEXT PRIMARY KEY,
    ledger JSONB NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
