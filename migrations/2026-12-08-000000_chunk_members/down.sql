ALTER TABLE message_status DROP COLUMN IF EXISTS members;
