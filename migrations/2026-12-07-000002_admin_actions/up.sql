-- What operators did to dead letters (replays, dry runs, discards): who (an API key's name, or
-- `cli:<user>`), when, which ones (the filter or the id) and how many.
CREATE TABLE IF NOT EXISTS admin_actions (
    id      BIGSERIAL PRIMARY KEY,
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    who     TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  JSONB NOT NULL,
    count   BIGINT NOT NULL,
    note    TEXT
);
CREATE INDEX IF NOT EXISTS admin_actions_at_idx ON admin_actions (at);
