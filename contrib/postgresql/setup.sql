-- A database for komerce-hookd (README "Several instances"). Run as a superuser, e.g.
--   sudo -u postgres psql -v pw="'$(openssl rand -base64 24)'" -f setup.sql
-- and put the URL, postgresql://hookd:PASSWORD@HOST:5432/hookd?sslmode=verify-full, into
-- /etc/komerce-hookd/secrets/store_url on every instance (mode 0600, owner root).

-- The daemon's role: it owns the schema, creates its tables at first start and migrates them
-- (under an advisory lock: instances starting together migrate once).
CREATE ROLE hookd LOGIN PASSWORD :pw;
CREATE DATABASE hookd OWNER hookd ENCODING 'UTF8' TEMPLATE template0;

-- Read-only access for komerce-hookctl's audit commands (events, payments, outbox, stats,
-- verify) from an operator's machine; replay needs the daemon's role.
CREATE ROLE hookd_audit LOGIN PASSWORD :pw;
GRANT CONNECT ON DATABASE hookd TO hookd_audit;
\connect hookd
GRANT USAGE ON SCHEMA public TO hookd_audit;
ALTER DEFAULT PRIVILEGES FOR ROLE hookd IN SCHEMA public GRANT SELECT ON TABLES TO hookd_audit;
