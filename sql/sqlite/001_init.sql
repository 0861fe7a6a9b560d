-- komerce-hookd schema, version 1.

CREATE TABLE payments (
	payment_id TEXT PRIMARY KEY NOT NULL,
	order_id TEXT,
	payment_type TEXT,
	channel_code TEXT,
	amount INTEGER,
	status TEXT NOT NULL CHECK (status IN ('PENDING', 'PAID', 'EXPIRED', 'CANCELED')),
	expires_at INTEGER,                  -- unix seconds
	created_at INTEGER NOT NULL,         -- unix milliseconds (all *_at below too)
	updated_at INTEGER NOT NULL,
	callback_seen_at INTEGER,            -- last callback of any status
	last_polled_at INTEGER,              -- reconciler: persisted so the 3 s limit survives restarts
	next_poll_at INTEGER,                -- NULL: not watched
	poll_attempts INTEGER NOT NULL DEFAULT 0,
	origin TEXT NOT NULL CHECK (origin IN ('callback', 'api', 'track', 'reconcile'))
) WITHOUT ROWID;

-- Only the reconciler's schedule is indexed: every index on a random key costs one more page
-- written per callback (see README "Performance"). Listing payments by status or order scans.
CREATE INDEX payments_due ON payments(next_poll_at) WHERE next_poll_at IS NOT NULL;

CREATE TABLE events (
	id INTEGER PRIMARY KEY,
	payment_id TEXT NOT NULL,
	order_id TEXT,
	status TEXT NOT NULL,
	amount INTEGER,
	source TEXT NOT NULL CHECK (source IN ('callback', 'reconcile', 'api')),
	conflict INTEGER NOT NULL DEFAULT 0,  -- 1: contradicts what was known (regression, amount)
	dedupe_key TEXT NOT NULL UNIQUE,
	raw_json TEXT NOT NULL,
	received_at INTEGER NOT NULL,         -- unix milliseconds
	prev_hash BLOB NOT NULL,
	hash BLOB NOT NULL
);

-- Events of one payment are found through the dedupe_key index ("<payment_id>:" prefix range),
-- so no separate payment_id index has to be written per callback.
CREATE INDEX events_order ON events(order_id, id);
CREATE INDEX events_received ON events(received_at);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
	SELECT RAISE(ABORT, 'events is append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
	SELECT RAISE(ABORT, 'events is append-only');
END;

CREATE TABLE receipts (
	id INTEGER PRIMARY KEY,
	event_id INTEGER NOT NULL REFERENCES events(id),
	source TEXT NOT NULL,
	remote_addr TEXT,
	received_at INTEGER NOT NULL
);

CREATE INDEX receipts_event ON receipts(event_id);

CREATE TABLE outbox (
	id INTEGER PRIMARY KEY,
	event_id INTEGER NOT NULL REFERENCES events(id),
	payment_id TEXT NOT NULL,
	sink TEXT NOT NULL,
	state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
	attempts INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,     -- unix milliseconds
	last_error TEXT,
	created_at INTEGER NOT NULL,
	delivered_at INTEGER
);

CREATE INDEX outbox_pending ON outbox(sink, state, next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_payment ON outbox(sink, payment_id, id) WHERE state = 'pending';
CREATE INDEX outbox_event ON outbox(event_id);
