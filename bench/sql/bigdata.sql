-- The bench's own statements (python -m bench.bigdata): destructive (TRUNCATE, DROP INDEX,
-- DISABLE TRIGGER), so never part of the service's query set (service/db/queries.py).

-- name: big_index_definitions()
-- The member coupons' secondary indexes as the migrations made them: dropped for a bulk COPY
-- and made again from these definitions afterwards (the DDL is the migrations', written once).
SELECT indexname, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_indexes AS x
JOIN pg_class AS c ON c.relname = x.indexname
JOIN pg_index AS i ON i.indexrelid = c.oid
WHERE x.tablename = 'yz_member_coupon' AND NOT i.indisprimary
ORDER BY indexname;

-- name: big_prepare_load#
-- Before a bulk COPY: no triggers (the loader computes end_at itself), no secondary indexes to
-- maintain row by row (big_index_definitions kept them).
ALTER TABLE yz_member_coupon DISABLE TRIGGER USER;
ALTER TABLE yz_member DISABLE TRIGGER USER;
ALTER TABLE yz_coupon DISABLE TRIGGER USER;
DROP INDEX IF EXISTS yz_member_coupon_member_tab_idx;
DROP INDEX IF EXISTS yz_member_coupon_member_end_idx;
DROP INDEX IF EXISTS yz_member_coupon_coupon_idx;
TRUNCATE yz_member_coupon, yz_coupon, yz_member, yz_tenant_setting;

-- name: big_finish_load#
-- After the COPY (and the indexes made again): triggers back, statistics, sequences, and a '*'
-- notification so that every running service stops trusting its caches.
ALTER TABLE yz_member_coupon ENABLE TRIGGER USER;
ALTER TABLE yz_member ENABLE TRIGGER USER;
ALTER TABLE yz_coupon ENABLE TRIGGER USER;
ANALYZE yz_member, yz_coupon, yz_tenant_setting;
SELECT setval(pg_get_serial_sequence('yz_member_coupon', 'id'),
              greatest((SELECT max(id) FROM yz_member_coupon), 1));
SELECT setval(pg_get_serial_sequence('yz_coupon', 'id'),
              greatest((SELECT max(id) FROM yz_coupon), 1));
SELECT pg_notify('coupons_invalidate', '*');

-- name: big_member_counts()
-- The generated skew: members by number of coupons held.
SELECT uid, count(*) AS n FROM yz_member_coupon GROUP BY uid ORDER BY n DESC LIMIT 5;

-- name: big_typical_member(low, high)$
-- A member whose coupon count is typical (between :low and :high).
SELECT uid FROM yz_member_coupon GROUP BY uid HAVING count(*) BETWEEN :low AND :high
ORDER BY uid LIMIT 1;

-- name: big_member_held(uid)$
-- How many coupons a member holds, for the report.
SELECT count(*) FROM yz_member_coupon WHERE uid = :uid;

-- name: big_vacuum#
-- The visibility map for index-only counts, and statistics (alone: VACUUM refuses a transaction).
VACUUM (ANALYZE) yz_member_coupon;
