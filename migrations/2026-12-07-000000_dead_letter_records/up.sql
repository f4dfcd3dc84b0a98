-- Dead letters keep the body's bytes as received (a NUL or invalid UTF-8 cannot make recording
-- fail), where the message first arrived (so a replayed copy is ordered as the original), the
-- id of the last dead-lettering recorded (recording it again changes nothing) and how many
-- times the message was dead-lettered (a replay that fails again is counted, not lost).
ALTER TABLE dead_letters ALTER COLUMN body TYPE BYTEA USING convert_to(body, 'UTF8');
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS position_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS position_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS record_id TEXT NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS times INTEGER NOT NULL DEFAULT 1;
-- Replay pages through dead letters in this order.
CREATE INDEX IF NOT EXISTS dead_letters_first_seen_idx ON dead_letters (first_seen, message_id);
