DROP INDEX IF EXISTS dead_letters_entity_class_idx;
ALTER TABLE discarded_dead_letters DROP COLUMN IF EXISTS reason_class;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS reason_class;
