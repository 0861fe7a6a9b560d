-- komerce-hookd schema, version 5: the same CHECK constraints, spelled without IN lists.
--
-- SQLite (3.40) checks `x IN ('a', 'b', 'c')` (three constants or more) against an ephemeral
-- B-tree that it builds, with a pager of its own, each time a row is written: six of them per
-- callback (events, payments, outbox), about a tenth of the writer thread's CPU. The same
-- constraint as comparisons joined by OR is evaluated in place. The meaning is the same (a NULL
-- passes both, the columns compare as TEXT in both).
--
-- A CHECK constraint has nothing on disk, so only the schema's text changes: SQLite's
-- documented procedure for such changes (lang_altertable.html, "Making Other Kinds Of Table
-- Schema Changes"): edit sqlite_schema with writable_schema, then increment schema_version
-- (the migration runner does that after every migration, so that every connection reparses).
-- A table whose text did not match is left as it was; check_migrate checks that none did.
PRAGMA writable_schema = ON;

UPDATE sqlite_schema SET sql = replace(replace(replace(sql,
	'CHECK (status IN (''PENDING'', ''PAID'', ''EXPIRED'', ''CANCELED''))',
	'CHECK (status = ''PENDING'' OR status = ''PAID'' OR status = ''EXPIRED'' OR status = ''CANCELED'')'),
	'CHECK (origin IN (''callback'', ''api'', ''track'', ''reconcile''))',
	'CHECK (origin = ''callback'' OR origin = ''api'' OR origin = ''track'' OR origin = ''reconcile'')'),
	'CHECK (confirmation IN (''pending'', ''confirmed'', ''unconfirmed''))',
	'CHECK (confirmation = ''pending'' OR confirmation = ''confirmed'' OR confirmation = ''unconfirmed'')')
WHERE type = 'table' AND name = 'payments';

UPDATE sqlite_schema SET sql = replace(replace(sql,
	'CHECK (source IN (''callback'', ''reconcile'', ''api''))',
	'CHECK (source = ''callback'' OR source = ''reconcile'' OR source = ''api'')'),
	'CHECK (confirmation IN (''held'', ''confirmed'', ''unconfirmed''))',
	'CHECK (confirmation = ''held'' OR confirmation = ''confirmed'' OR confirmation = ''unconfirmed'')')
WHERE type = 'table' AND name = 'events';

UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (state IN (''pending'', ''delivered'', ''dead''))',
	'CHECK (state = ''pending'' OR state = ''delivered'' OR state = ''dead'')')
WHERE type = 'table' AND name = 'outbox';

UPDATE sqlite_schema SET sql = replace(sql,
	'CHECK (outcome IN (''ok'', ''refused'', ''rate_limited'', ''failed''))',
	'CHECK (outcome = ''ok'' OR outcome = ''refused'' OR outcome = ''rate_limited'' OR outcome = ''failed'')')
WHERE type = 'table' AND name = 'polls';

PRAGMA writable_schema = OFF;
