-- Test-only migration 3: never shipped, never in sql/. check_migrate links the real store with
-- sql/sqlite/*.sql and this file, i.e. it is a binary one schema version ahead of what ships,
-- opening a version-1 database, so that the upgrade path (backup, migration, refusal of a newer file) is tested
-- with a migration of its own that can be made to fail after a real one succeeded. It adds a column, an index and a table: the
-- kinds of change real migrations make. A database that already has upgrade_marker makes it
-- fail (the rollback test).
ALTER TABLE payments ADD COLUMN note TEXT;
CREATE INDEX events_conflicts ON events(id) WHERE conflict = 1;
CREATE TABLE upgrade_marker (id INTEGER PRIMARY KEY, note TEXT NOT NULL);
INSERT INTO upgrade_marker (note) VALUES ('migrated to 2');
