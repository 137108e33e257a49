-- Each member coupon's end, stored on the row (maintained by triggers), so that a tab's filter,
-- its count and the cache's clock horizon read a column instead of recomputing a time-zone
-- conversion per row: a member holding 50,000 coupons costs index probes, not a scan.

-- The display zone the ends are computed in; `python -m service migrate` keeps it equal to
-- DISPLAY_TZ (and recomputes every end when it changes).
CREATE TABLE IF NOT EXISTS coupons_config (
    name   text PRIMARY KEY,
    value  text NOT NULL
);
INSERT INTO coupons_config (name, value) VALUES ('display_tz', 'Asia/Shanghai')
ON CONFLICT (name) DO NOTHING;

CREATE OR REPLACE FUNCTION coupons_display_tz() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value FROM coupons_config WHERE name = 'display_tz'), 'Asia/Shanghai')
$$;

-- NULL: never ends. Writers never set it; the trigger below does.
ALTER TABLE yz_member_coupon ADD COLUMN IF NOT EXISTS end_at timestamptz DEFAULT NULL;

CREATE OR REPLACE FUNCTION coupons_member_coupon_set_end() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.end_at := (SELECT coupon_end_at(c.time_limit, c.time_days, c.time_end, NEW.get_time,
                                        coupons_display_tz())
                   FROM yz_coupon AS c WHERE c.id = NEW.coupon_id);
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS coupons_member_coupon_set_end ON yz_member_coupon;
CREATE TRIGGER coupons_member_coupon_set_end
    BEFORE INSERT OR UPDATE OF coupon_id, get_time, end_at ON yz_member_coupon
    FOR EACH ROW EXECUTE FUNCTION coupons_member_coupon_set_end();

-- A coupon's validity changing (or the coupon arriving after its member rows) moves the end of
-- every member coupon of it; that UPDATE notifies the holders through the 0002 triggers.
CREATE OR REPLACE FUNCTION coupons_coupon_set_ends() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.time_limit IS DISTINCT FROM OLD.time_limit
       OR NEW.time_days IS DISTINCT FROM OLD.time_days
       OR NEW.time_end IS DISTINCT FROM OLD.time_end THEN
        -- Naming end_at fires the row trigger above, which computes the new value.
        UPDATE yz_member_coupon SET end_at = NULL WHERE coupon_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS coupons_coupon_set_ends ON yz_coupon;
CREATE TRIGGER coupons_coupon_set_ends AFTER INSERT OR UPDATE ON yz_coupon
    FOR EACH ROW EXECUTE FUNCTION coupons_coupon_set_ends();

UPDATE yz_member_coupon AS mc
SET end_at = coupon_end_at(c.time_limit, c.time_days, c.time_end, mc.get_time,
                           coupons_display_tz())
FROM yz_coupon AS c
WHERE c.id = mc.coupon_id;

-- The page index again, carrying what a tab's filter and count read (index-only when the
-- visibility map allows), and the horizon's index: the next end of a member's unused coupons.
CREATE INDEX IF NOT EXISTS yz_member_coupon_member_tab_idx
    ON yz_member_coupon (uniacid, uid, used, get_time DESC, id DESC) INCLUDE (coupon_id, end_at)
    WHERE is_member_deleted = 0;
DROP INDEX IF EXISTS yz_member_coupon_member_page_idx;
CREATE INDEX IF NOT EXISTS yz_member_coupon_member_end_idx
    ON yz_member_coupon (uniacid, uid, end_at)
    WHERE used = 0 AND is_member_deleted = 0;
