-- A status row may cover a run of a chunk's members (bulk loads): `members` of them, from its
-- own id (a member id) on; NULL for a single message. A member's status is the row whose id is
-- the greatest at or below its own within its chunk, when that row's run reaches it.
ALTER TABLE message_status ADD COLUMN IF NOT EXISTS members INTEGER;
