-- Every write that can change a rendered page, by any writer (the mall's PHP, an admin in psql),
-- notifies channel `coupons_invalidate` after commit (NOTIFY is transactional). Payloads:
--   m:<uniacid>:<uid>        one member's pages
--   c:<uniacid>:<coupon_id>  the pages of every member holding that coupon
--   t:<uniacid>              a whole tenant
--   *                        everything (TRUNCATE)
-- NOTIFY drops duplicate payloads within a transaction, so a bulk write costs one message per
-- member; past 1000 members in one statement, one tenant message replaces them.

CREATE OR REPLACE FUNCTION coupons_notify_members(uniacids integer[], uids bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT p.uniacid, array_agg(DISTINCT p.uid) AS uids
        FROM unnest(uniacids, uids) AS p(uniacid, uid)
        GROUP BY p.uniacid
    LOOP
        IF cardinality(t.uids) > 1000 THEN
            PERFORM pg_notify('coupons_invalidate', 't:' || t.uniacid);
        ELSE
            PERFORM pg_notify('coupons_invalidate', 'm:' || t.uniacid || ':' || u)
            FROM unnest(t.uids) AS u;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION coupons_member_coupon_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM coupons_notify_members(array_agg(uniacid), array_agg(uid)) FROM new_rows;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM coupons_notify_members(array_agg(uniacid), array_agg(uid)) FROM old_rows;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS coupons_member_coupon_insert ON yz_member_coupon;
CREATE TRIGGER coupons_member_coupon_insert AFTER INSERT ON yz_member_coupon
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coupons_member_coupon_changed();
DROP TRIGGER IF EXISTS coupons_member_coupon_update ON yz_member_coupon;
CREATE TRIGGER coupons_member_coupon_update AFTER UPDATE ON yz_member_coupon
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coupons_member_coupon_changed();
DROP TRIGGER IF EXISTS coupons_member_coupon_delete ON yz_member_coupon;
CREATE TRIGGER coupons_member_coupon_delete AFTER DELETE ON yz_member_coupon
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coupons_member_coupon_changed();

-- A coupon definition: the listener finds its holders (yz_member_coupon_coupon_idx).
CREATE OR REPLACE FUNCTION coupons_coupon_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('coupons_invalidate', 'c:' || OLD.uniacid || ':' || OLD.id);
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.uniacid IS DISTINCT FROM OLD.uniacid THEN
        PERFORM pg_notify('coupons_invalidate', 'c:' || NEW.uniacid || ':' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS coupons_coupon_changed ON yz_coupon;
CREATE TRIGGER coupons_coupon_changed AFTER UPDATE OR DELETE ON yz_coupon
    FOR EACH ROW EXECUTE FUNCTION coupons_coupon_changed();

-- Which hotels a coupon names: that coupon's holders.
CREATE OR REPLACE FUNCTION coupons_coupon_hotel_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('coupons_invalidate', 'c:' || c.uniacid || ':' || c.id)
    FROM yz_coupon AS c
    WHERE c.id IN (CASE WHEN TG_OP <> 'INSERT' THEN OLD.coupon_id END,
                   CASE WHEN TG_OP <> 'DELETE' THEN NEW.coupon_id END);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS coupons_coupon_hotel_changed ON yz_coupon_hotel;
CREATE TRIGGER coupons_coupon_hotel_changed AFTER INSERT OR UPDATE OR DELETE ON yz_coupon_hotel
    FOR EACH ROW EXECUTE FUNCTION coupons_coupon_hotel_changed();

-- Tenant-wide inputs: settings (plugins, window, transfer) and the names of stores, goods and
-- hotels that coupons show.
CREATE OR REPLACE FUNCTION coupons_tenant_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('coupons_invalidate', 't:' || OLD.uniacid);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('coupons_invalidate', 't:' || NEW.uniacid);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS coupons_tenant_setting_changed ON yz_tenant_setting;
CREATE TRIGGER coupons_tenant_setting_changed AFTER INSERT OR UPDATE OR DELETE ON yz_tenant_setting
    FOR EACH ROW EXECUTE FUNCTION coupons_tenant_changed();
DROP TRIGGER IF EXISTS coupons_store_changed ON yz_store;
CREATE TRIGGER coupons_store_changed AFTER INSERT OR UPDATE OR DELETE ON yz_store
    FOR EACH ROW EXECUTE FUNCTION coupons_tenant_changed();
DROP TRIGGER IF EXISTS coupons_goods_changed ON yz_goods;
CREATE TRIGGER coupons_goods_changed AFTER INSERT OR UPDATE OR DELETE ON yz_goods
    FOR EACH ROW EXECUTE FUNCTION coupons_tenant_changed();
DROP TRIGGER IF EXISTS coupons_hotel_changed ON yz_hotel;
CREATE TRIGGER coupons_hotel_changed AFTER INSERT OR UPDATE OR DELETE ON yz_hotel
    FOR EACH ROW EXECUTE FUNCTION coupons_tenant_changed();

-- A member moving tenant or disappearing: their pages under the old tenant.
CREATE OR REPLACE FUNCTION coupons_member_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('coupons_invalidate', 'm:' || OLD.uniacid || ':' || OLD.uid);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('coupons_invalidate', 'm:' || NEW.uniacid || ':' || NEW.uid);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS coupons_member_changed ON yz_member;
CREATE TRIGGER coupons_member_changed AFTER INSERT OR UPDATE OR DELETE ON yz_member
    FOR EACH ROW EXECUTE FUNCTION coupons_member_changed();

-- TRUNCATE of anything the pages show: everything.
CREATE OR REPLACE FUNCTION coupons_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('coupons_invalidate', '*');
    RETURN NULL;
END
$$;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['yz_member_coupon', 'yz_coupon', 'yz_coupon_hotel', 'yz_member',
                               'yz_store', 'yz_goods', 'yz_hotel', 'yz_tenant_setting']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS coupons_truncated ON %I', tbl);
        EXECUTE format('CREATE TRIGGER coupons_truncated AFTER TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION coupons_truncated()', tbl);
    END LOOP;
END
$$;
