-- Infrastructure tables of the worker (entity tables come from entities/*.yaml).

-- One row per message whose rows were committed (or that was dead-lettered). Written in the
-- same transaction as the entity rows, so a redelivered message is recognised and skipped.
CREATE TABLE IF NOT EXISTS message_status (
    message_id   UUID PRIMARY KEY,
    entity       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('processed', 'dead_lettered')),
    received_at  TIMESTAMPTZ NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    row_count    INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 1,
    error        TEXT
);

-- Messages that could not be processed, with the reason, kept for inspection and replay.
CREATE TABLE IF NOT EXISTS dead_letters (
    message_id  UUID PRIMARY KEY,
    entity      TEXT NOT NULL,
    body        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_entity_idx ON dead_letters (entity);
