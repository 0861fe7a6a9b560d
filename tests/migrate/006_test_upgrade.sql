-- Test-only migration 6: never shipped, never in sql/. check_migrate links the real store with
-- sql/sqlite/*.sql and this file, i.e. it is a binary one schema version ahead of the shipped
-- one, so that the upgrade path (backup, every migration from version 1, refusal of a newer
-- file, a failing migration) is tested whatever the shipped migrations are. It adds a column, an index and a table: the
-- kinds of change real migrations make. A database that already has upgrade_marker makes it
-- fail (the rollback test).
ALTER TABLE payments ADD COLUMN note TEXT;
CREATE INDEX events_conflicts ON events(id) WHERE conflict = 1;
CREATE TABLE upgrade_marker (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
INSERT INTO upgrade_marker (note) VALUES ('migrated to 2');
