-- name: coupon_page(uniacid, member_id, staff_userid, external_userid, status, use_types, coupon_methods, near_only, now, page_limit, page_offset, total_cap)
-- One response in one round trip: who the member is, the tenant's settings, where it lives, the
-- tab's
-- total (counted up to :total_cap rows, so a member holding 50,000 coupons costs no more than
-- one holding :total_cap), the rows of the page with every name the items show, and
-- `valid_until`: the first whole second (unix) at which any of the member's unused coupons
-- changes tab (its end passes) or near-expiration flag (its end minus the tenant's window),
-- i.e. when a cached copy of any of the member's pages stops being true by the clock alone
-- (NULL: never). Ends are yz_member_coupon.end_at (0004_member_coupon_end_at.sql).
-- The member is :member_id (a token that names it) or, when that is NULL, the member that the
-- staff member :staff_userid follows as WeCom contact :external_userid in the tenant (NULL when
-- no such follow, or when rows of the follow disagree on the member: never a guess).
-- The first row carries the header columns; when the page is empty it is the only row and its
-- item columns are NULL. :status 1 unused, 2 expired, 3 used; :use_types / :coupon_methods NULL
-- mean "any". The page and the count walk yz_member_coupon_member_tab_idx in response order and
-- stop at what they need.
WITH who AS MATERIALIZED (
    SELECT coalesce(:member_id::bigint, (
        SELECT CASE WHEN count(DISTINCT wc.uid) = 1 THEN min(wc.uid) END
        FROM yz_wecom_contact AS wc
        WHERE wc.uniacid = :uniacid
          AND wc.staff_userid = :staff_userid::text
          AND wc.external_userid = :external_userid::text)) AS member_id
),
setting AS (
    SELECT coalesce(ts.coupon_transfer, false)      AS coupon_transfer,
           coalesce(ts.store_plugin, true)          AS store_plugin,
           coalesce(ts.hotel_plugin, true)          AS hotel_plugin,
           coalesce(ts.near_expiration_days, 3) * interval '86400 seconds' AS near_window,
           (SELECT member_id FROM who)                    AS member_id,
           (SELECT m.uniacid FROM yz_member AS m
            WHERE m.uid = (SELECT member_id FROM who))    AS member_uniacid
    FROM (SELECT 1) AS one
    LEFT JOIN yz_tenant_setting AS ts ON ts.uniacid = :uniacid
),
-- The tab's rows, in response order. Not materialised: the planner inlines it into both uses
-- below, each walking the index only as far as it needs.
tab AS NOT MATERIALIZED (
    SELECT mc.id, mc.get_time, mc.end_at,
           (:status::int = 1 AND mc.end_at <= :now::timestamptz + s.near_window) AS near
    FROM setting AS s
    CROSS JOIN yz_member_coupon AS mc
    JOIN yz_coupon AS c ON c.id = mc.coupon_id AND c.uniacid = mc.uniacid
    WHERE mc.uniacid = :uniacid
      AND mc.uid = (SELECT member_id FROM who)
      AND mc.is_member_deleted = 0
      AND mc.used = CASE WHEN :status::int = 3 THEN 1 ELSE 0 END
      AND (:status::int = 3
           OR (:status::int = 1) = (mc.end_at IS NULL OR mc.end_at >= :now::timestamptz))
      AND (s.store_plugin OR c.use_type NOT IN (4, 5))
      AND (s.hotel_plugin OR c.use_type NOT IN (6, 7))
      AND (:use_types::int[] IS NULL OR c.use_type = ANY (:use_types::int[]))
      AND (:coupon_methods::int[] IS NULL OR c.coupon_method = ANY (:coupon_methods::int[]))
      AND (NOT :near_only::boolean
           OR (:status::int = 1 AND mc.end_at <= :now::timestamptz + s.near_window))
),
page AS (
    SELECT * FROM tab
    ORDER BY get_time DESC, id DESC
    LIMIT :page_limit OFFSET :page_offset
),
counted AS (
    SELECT count(*) AS total FROM (SELECT 1 FROM tab LIMIT :total_cap) AS capped
),
horizon AS (
    SELECT least(
        -- expired once now > end: from the next whole second after the next end
        (SELECT floor(extract(epoch FROM min(mc.end_at)))::bigint + 1
         FROM yz_member_coupon AS mc
         WHERE mc.uniacid = :uniacid AND mc.uid = (SELECT member_id FROM who)
           AND mc.used = 0 AND mc.is_member_deleted = 0
           AND mc.end_at >= :now::timestamptz),
        -- near once end <= now + window: from the first whole second at or after end - window
        (SELECT ceil(extract(epoch FROM nxt.end_at - s.near_window))::bigint
         FROM setting AS s
         CROSS JOIN LATERAL (
             SELECT min(mc.end_at) AS end_at
             FROM yz_member_coupon AS mc
             WHERE mc.uniacid = :uniacid AND mc.uid = (SELECT member_id FROM who)
               AND mc.used = 0 AND mc.is_member_deleted = 0
               AND mc.end_at > :now::timestamptz + s.near_window
         ) AS nxt)
    ) AS valid_until
)
SELECT s.coupon_transfer, s.store_plugin, s.hotel_plugin, s.member_id, s.member_uniacid,
       counted.total,
       horizon.valid_until,
       mc.id, mc.coupon_id, mc.used, mc.use_time, mc.get_time, p.end_at, p.near,
       c.name, c.coupon_method, c.deduct, c.discount, c.enough, c.use_type,
       c.category_ids, c.categorynames, c.goods_ids, c.goods_names, c.storenames,
       c.suppliernames, c.time_limit, c.time_days, c.time_start, c.time_end, c.total AS coupon_total,
       c.money, c.credit, c.plugin_id, c.use_conditions,
       CASE WHEN c.use_type IN (6, 7) THEN ARRAY(
           SELECT h.hotel_name FROM yz_coupon_hotel AS ch
           JOIN yz_hotel AS h ON h.id = ch.hotel_id AND h.uniacid = c.uniacid
           WHERE ch.coupon_id = c.id ORDER BY h.id)
       END AS hotel_names,
       CASE WHEN c.use_type = 9 AND jsonb_typeof(c.use_conditions -> 'store_ids') = 'array'
       THEN ARRAY(
           SELECT st.store_name FROM yz_store AS st
           WHERE st.uniacid = c.uniacid AND st.id IN (
               SELECT x::bigint FROM jsonb_array_elements_text(c.use_conditions -> 'store_ids') AS x
               WHERE x ~ '^[0-9]{1,18}$')
           ORDER BY st.id)
       END AS condition_store_names,
       CASE WHEN c.use_type = 9 AND jsonb_typeof(c.use_conditions -> 'good_ids') = 'array'
       THEN ARRAY(
           SELECT g.title FROM yz_goods AS g
           WHERE g.uniacid = c.uniacid AND g.id IN (
               SELECT x::bigint FROM jsonb_array_elements_text(c.use_conditions -> 'good_ids') AS x
               WHERE x ~ '^[0-9]{1,18}$')
           ORDER BY g.id)
       END AS condition_goods_titles
FROM setting AS s
CROSS JOIN counted
CROSS JOIN horizon
LEFT JOIN page AS p ON true
LEFT JOIN yz_member_coupon AS mc ON mc.id = p.id
LEFT JOIN yz_coupon AS c ON c.id = mc.coupon_id
ORDER BY p.get_time DESC, p.id DESC;

-- name: display_tz()$
-- The zone the stored coupon ends were computed in (coupons_config).
SELECT coupons_display_tz();

-- name: set_display_tz(tz)$
-- Make DISPLAY_TZ the zone of stored ends; true when it changed (then run recompute_ends in the
-- same transaction: the row trigger reads the zone from coupons_config).
WITH changed AS (
    UPDATE coupons_config SET value = :tz WHERE name = 'display_tz' AND value <> :tz
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM changed);

-- name: recompute_ends()!
-- Every stored end again (naming end_at fires the row trigger, which computes it).
UPDATE yz_member_coupon SET end_at = NULL;

-- name: ping()$
-- Readiness: the database answers a trivial statement.
SELECT 1;

-- name: coupon_holders(coupon_id, max_members)
-- The members holding a coupon (yz_member_coupon_coupon_idx), at most :max_members of them: the
-- listener invalidates their pages when the coupon's definition changes.
SELECT DISTINCT uid FROM yz_member_coupon WHERE coupon_id = :coupon_id LIMIT :max_members;

-- name: use_member_coupon(id, now)^
-- Mark one coupon used, exactly once: concurrent callers queue on the row lock, and every one
-- after the first re-checks `used = 0` against the committed row and updates nothing.
UPDATE yz_member_coupon
SET used = 1, use_time = :now, updated_at = :now
WHERE id = :id AND used = 0 AND is_member_deleted = 0
RETURNING id, uniacid, uid, use_time;

-- name: member_coupon_state(id)^
-- Why a use was refused: absent, deleted by the member, or already used.
SELECT id, uniacid, uid, used, is_member_deleted, use_time FROM yz_member_coupon WHERE id = :id;
