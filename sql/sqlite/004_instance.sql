-- komerce-hookd schema, version 4: receipts name the instance that took the delivery
-- ([cluster] instance), as the PostgreSQL schema does, so that one audit trail reads the same on
-- either backend. Rows written before it stay NULL.
ALTER TABLE receipts ADD COLUMN instance TEXT;
