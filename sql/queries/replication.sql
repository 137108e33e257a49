-- name: primary_wal_lsn()$
-- The primary's WAL insert position, as bytes since 0/0: taken after a write has committed, it
-- is at or past that commit, so a replica that has replayed this far sees the write.
SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint;

-- name: replica_replayed_lsn()$
-- How far a replica has replayed the primary's WAL, as bytes since 0/0; NULL on a server that
-- is not in recovery (a primary answers for itself: never behind).
SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint;
