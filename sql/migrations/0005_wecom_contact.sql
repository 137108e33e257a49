-- The WeCom sidebar knows the staff member (its token's `sub`) and the external contact it chats
-- with (`external_userid`), not the member: the mall records which staff member follows which
-- contact and who that contact is in the mall. A staff token without `member_id` may read the
-- pages of a contact only through a row here (README "Security").
CREATE TABLE IF NOT EXISTS yz_wecom_contact (
    id               bigserial PRIMARY KEY,
    uniacid          integer NOT NULL,
    external_userid  text NOT NULL,
    staff_userid     text NOT NULL,
    uid              bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The lookup of every sidebar request: (tenant, staff, contact) -> member. Not unique: a writer
-- that records a follow twice must not fail; two rows naming different members are refused
-- by the lookup instead (sql/queries/coupons.sql).
CREATE INDEX IF NOT EXISTS yz_wecom_contact_lookup_idx
    ON yz_wecom_contact (uniacid, staff_userid, external_userid) INCLUDE (uid);

-- Every change notifies `coupons_invalidate` (as 0002 does for the coupon tables), so that a
-- process's cached mapping never outlives a follow that was removed or re-pointed:
--   w:<uniacid>:<json [staff_userid, external_userid]>   one mapping
--   w:<uniacid>                                         a tenant's mappings (bulk writes)
CREATE OR REPLACE FUNCTION coupons_wecom_contact_notify(
    uniacids integer[], staff_userids text[], external_userids text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.uniacid,
               array_agg(DISTINCT jsonb_build_array(c.staff_userid, c.external_userid)::text)
                   AS pairs
        FROM unnest(uniacids, staff_userids, external_userids)
             AS c(uniacid, staff_userid, external_userid)
        GROUP BY c.uniacid
    LOOP
        IF cardinality(t.pairs) > 1000 THEN
            PERFORM pg_notify('coupons_invalidate', 'w:' || t.uniacid);
        ELSE
            PERFORM pg_notify('coupons_invalidate', 'w:' || t.uniacid || ':' || p)
            FROM unnest(t.pairs) AS p;
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION coupons_wecom_contact_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM coupons_wecom_contact_notify(array_agg(uniacid), array_agg(staff_userid),
                                             array_agg(external_userid)) FROM new_rows;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM coupons_wecom_contact_notify(array_agg(uniacid), array_agg(staff_userid),
                                             array_agg(external_userid)) FROM old_rows;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS coupons_wecom_contact_insert ON yz_wecom_contact;
CREATE TRIGGER coupons_wecom_contact_insert AFTER INSERT ON yz_wecom_contact
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coupons_wecom_contact_changed();
DROP TRIGGER IF EXISTS coupons_wecom_contact_update ON yz_wecom_contact;
CREATE TRIGGER coupons_wecom_contact_update AFTER UPDATE ON yz_wecom_contact
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coupons_wecom_contact_changed();
DROP TRIGGER IF EXISTS coupons_wecom_contact_delete ON yz_wecom_contact;
CREATE TRIGGER coupons_wecom_contact_delete AFTER DELETE ON yz_wecom_contact
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION coupons_wecom_contact_changed();
DROP TRIGGER IF EXISTS coupons_truncated ON yz_wecom_contact;
CREATE TRIGGER coupons_truncated AFTER TRUNCATE ON yz_wecom_contact
    FOR EACH STATEMENT EXECUTE FUNCTION coupons_truncated();
