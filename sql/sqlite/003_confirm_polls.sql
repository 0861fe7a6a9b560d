-- komerce-hookd schema, version 3: PAID callbacks confirmed by a status call, and the
-- reconciler's polls log (issue 16).

-- events: an event's part in the confirmation of a PAID callback (komerce.confirm_paid).
--   held        a PAID callback stored as received but not applied and not forwarded
--   confirmed   the status call's PAID that confirmed the held callback held_event_id
--   unconfirmed a conflict: the status call said otherwise about held_event_id
-- Both columns are in the chain hash of the events that set them (hash version 2); events
-- without them hash as before, so existing chains still verify.
ALTER TABLE events ADD COLUMN confirmation TEXT
	CHECK (confirmation IN ('held', 'confirmed', 'unconfirmed'));
ALTER TABLE events ADD COLUMN held_event_id INTEGER;

-- payments: where the latest held PAID callback stands (NULL: none was held).
ALTER TABLE payments ADD COLUMN confirmation TEXT
	CHECK (confirmation IN ('pending', 'confirmed', 'unconfirmed'));
ALTER TABLE payments ADD COLUMN confirmation_detail TEXT; -- why, e.g. "Komerce says PENDING"
ALTER TABLE payments ADD COLUMN confirmation_at INTEGER;  -- unix ms of the last change
ALTER TABLE payments ADD COLUMN held_event_id INTEGER;    -- the held callback's event id

-- Pending confirmations are polled before the backlog of ordinary polls: a small index, one
-- entry per PAID callback waiting for its status call.
CREATE INDEX payments_confirming ON payments(next_poll_at)
	WHERE confirmation = 'pending' AND next_poll_at IS NOT NULL;

-- One row per status call the reconciler made and heard back from (a request whose reply
-- never came, because the daemon stopped, is not listed): what Komerce said, for the console
-- and komerce-hookctl. Not hash-chained; the facts learned are events.
CREATE TABLE polls (
	id INTEGER PRIMARY KEY,
	payment_id TEXT NOT NULL,
	polled_at INTEGER NOT NULL,          -- unix ms, when the request was sent
	elapsed_ms INTEGER NOT NULL,
	outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'rate_limited', 'failed')),
	http_status INTEGER,                 -- NULL: no HTTP reply
	komerce_status TEXT,                 -- what Komerce said (outcome ok)
	confirming INTEGER NOT NULL DEFAULT 0, -- 1: to confirm a PAID callback
	error TEXT
);

CREATE INDEX polls_payment ON polls(payment_id, id);
