-- The class of a dead letter's reason (`store::ReasonClass`): the console groups dead letters
-- by entity and class, and filters by class. Records from before are `unclassified`.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS reason_class TEXT NOT NULL DEFAULT 'unclassified';
ALTER TABLE discarded_dead_letters ADD COLUMN IF NOT EXISTS reason_class TEXT NOT NULL DEFAULT 'unclassified';
CREATE INDEX IF NOT EXISTS dead_letters_entity_class_idx ON dead_letters (entity, reason_class);
