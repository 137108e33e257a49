-- name: migrations_lock(key)!
-- Session advisory lock held across the per-file transactions, so two runners serialise.
SELECT pg_advisory_lock(:key::bigint);

-- name: migrations_unlock(key)!
-- Release the runner's session lock.
SELECT pg_advisory_unlock(:key::bigint);

-- name: create_migrations_table#
-- The table of applied versions, with a checksum to catch a file edited after it ran.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations()
-- Every applied version and its checksum.
SELECT version, checksum FROM schema_migrations ORDER BY version;

-- name: record_migration(version, checksum)!
-- Mark one version applied, in the same transaction as its statements.
INSERT INTO schema_migrations (version, checksum) VALUES (:version, :checksum);
