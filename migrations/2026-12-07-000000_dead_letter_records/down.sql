DROP INDEX IF EXISTS dead_letters_first_seen_idx;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS times;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS record_id;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS position_seq;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS position_epoch;
ALTER TABLE dead_letters ALTER COLUMN body TYPE TEXT USING convert_from(body, 'UTF8');
