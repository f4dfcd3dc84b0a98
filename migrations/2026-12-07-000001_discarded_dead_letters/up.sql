-- Dead letters an operator discarded: moved here whole (body, reason, deliveries, where the
-- message first arrived), with who discarded it, why and when, so that discarding never loses
-- a message. Its `message_status` row stays `dead_lettered`: the message was not stored.
CREATE TABLE IF NOT EXISTS discarded_dead_letters (
    id              BIGSERIAL PRIMARY KEY,
    message_id      UUID NOT NULL,
    entity          TEXT NOT NULL,
    body            BYTEA NOT NULL,
    reason          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    times           INTEGER NOT NULL,
    position_epoch  BIGINT NOT NULL,
    position_seq    BIGINT NOT NULL,
    first_seen      TIMESTAMPTZ NOT NULL,
    last_seen       TIMESTAMPTZ NOT NULL,
    discarded_by    TEXT NOT NULL,
    note            TEXT NOT NULL,
    discarded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS discarded_dead_letters_message_idx
    ON discarded_dead_letters (message_id);
