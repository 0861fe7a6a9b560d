-- komerce-hookd schema, version 2: what became of a replayed dead letter.
-- A dead row that is queued again (komerce-hookctl replay, the admin API) records when and by
-- whom; the new row names the dead one it replaces. The partial index costs nothing on the
-- ingest path: ordinary rows have no replay_of.
ALTER TABLE outbox ADD COLUMN replayed_at INTEGER;   -- unix ms, on the dead row
ALTER TABLE outbox ADD COLUMN replayed_by TEXT;      -- "komerce-hookctl", "admin api", ...
ALTER TABLE outbox ADD COLUMN replay_of INTEGER;     -- on the new row: the dead row's id
CREATE INDEX outbox_replay_of ON outbox(replay_of) WHERE replay_of IS NOT NULL;
