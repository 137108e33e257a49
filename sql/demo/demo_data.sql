-- Demo tenants for `python -m service demo-data`; safe to run again (it replaces its own rows).
-- Tenant 1 / member 1 holds the seed example's six coupons (same ids, names, amounts, get_time)
-- plus one live coupon of every kind; member 2 has 130 unused ones to scroll; tenant 2
-- has both plugins off. Relative dates follow now(), so every tab has something to show today.

DELETE FROM yz_member_coupon WHERE uniacid IN (1, 2);
DELETE FROM yz_coupon_hotel WHERE coupon_id IN (SELECT id FROM yz_coupon WHERE uniacid IN (1, 2));
DELETE FROM yz_coupon WHERE uniacid IN (1, 2);
DELETE FROM yz_member WHERE uniacid IN (1, 2);
DELETE FROM yz_store WHERE uniacid IN (1, 2);
DELETE FROM yz_goods WHERE uniacid IN (1, 2);
DELETE FROM yz_hotel WHERE uniacid IN (1, 2);
DELETE FROM yz_tenant_setting WHERE uniacid IN (1, 2);
DELETE FROM yz_wecom_contact WHERE uniacid IN (1, 2);

INSERT INTO yz_tenant_setting (uniacid, coupon_transfer, store_plugin, hotel_plugin, near_expiration_days)
VALUES (1, true, true, true, 3), (2, false, false, false, 5);

INSERT INTO yz_member (uid, uniacid, nickname)
SELECT uid, 1, '演示会员' || uid FROM generate_series(1, 20) AS uid;
INSERT INTO yz_member (uid, uniacid, nickname) VALUES (1001, 2, '二号商户会员A'), (1002, 2, '二号商户会员B');

INSERT INTO yz_store (id, uniacid, store_name) VALUES (1, 1, '南山店'), (2, 1, '福田店'), (3, 2, '二号商户门店');
INSERT INTO yz_goods (id, uniacid, title) VALUES (1, 1, '保温杯'), (2, 1, '雨伞'), (64, 1, '爱心值测试');
INSERT INTO yz_hotel (id, uniacid, hotel_name) VALUES (1, 1, '海景酒店'), (2, 1, '山景酒店');

-- The seed example's coupon definitions (ids 3, 4, 5).
INSERT INTO yz_coupon (id, uniacid, name, coupon_method, deduct, discount, enough, use_type,
                       goods_ids, goods_names, time_limit, time_days, time_start, time_end, total)
VALUES
    (3, 1, '满100减10', 1, 10, 0, 100, 0, NULL, NULL, 0, 1,
     '2017-07-14 00:00:00+08', '2017-07-21 00:00:00+08', 100),
    (4, 1, '12', 1, 10, 0, 0, 0, NULL, NULL, 0, 10,
     '2017-08-16 00:00:00+08', '2017-08-23 00:00:00+08', 0),
    (5, 1, '优惠券测试', 1, 10, 0, 100, 0, ARRAY['64'], ARRAY['爱心值测试'], 0, 1,
     '2017-09-26 00:00:00+08', '2017-10-03 00:00:00+08', -1);

-- One live coupon of every use_type and method.
WITH day AS (SELECT date_trunc('day', now() AT TIME ZONE 'Asia/Shanghai') AS today)
INSERT INTO yz_coupon (id, uniacid, name, coupon_method, deduct, discount, enough, use_type,
                       category_ids, categorynames, goods_ids, goods_names, storeids, storenames,
                       suppliernames, time_limit, time_days, time_start, time_end, total,
                       use_conditions)
SELECT v.id, 1, v.name, v.method, v.deduct, v.discount, v.enough, v.use_type,
       v.category_ids, v.categorynames, v.goods_ids, v.goods_names, v.storeids, v.storenames,
       v.suppliernames, v.time_limit, v.time_days,
       (day.today + v.start_offset) AT TIME ZONE 'Asia/Shanghai',
       (day.today + v.end_offset) AT TIME ZONE 'Asia/Shanghai',
       v.total, v.use_conditions
FROM day, (VALUES
    (101, '全场满200减20', 1, 20.00, 0.00, 200, 0, NULL::text[], NULL::text[], NULL::text[], NULL::text[], NULL::text[], NULL::text[], NULL::text[], 1, 0, interval '-10 days', interval '30 days 23:59:59', -1, NULL::jsonb),
    (102, '服装鞋靴8.5折', 2, 0.00, 8.50, 100, 1, ARRAY['11', '12'], ARRAY['服装', '鞋靴'], NULL, NULL, NULL, NULL, NULL, 0, 30, interval '-30 days', interval '60 days', 500, NULL),
    (103, '保温杯雨伞立减5元', 1, 5.00, 0.00, 0, 2, NULL, NULL, ARRAY['1', '2'], ARRAY['保温杯', '雨伞'], NULL, NULL, NULL, 0, 0, interval '-5 days', interval '5 days', -1, NULL),
    (104, '优选供应商满50减8', 1, 8.00, 0.00, 50, 3, NULL, NULL, NULL, NULL, NULL, NULL, ARRAY['优选供应商'], 1, 0, interval '-20 days', interval '2 days 23:59:59', -1, NULL),
    (105, '门店通用9折', 2, 0.00, 9.00, 0, 4, NULL, NULL, NULL, NULL, ARRAY['1', '2'], ARRAY['南山店', '福田店'], NULL, 0, 7, interval '-1 day', interval '30 days', -1, NULL),
    (106, '南山店满30减5', 1, 5.00, 0.00, 30, 5, NULL, NULL, NULL, NULL, ARRAY['1'], ARRAY['南山店'], NULL, 1, 0, interval '-3 days', interval '20 days 23:59:59', -1, NULL),
    (107, '海景酒店立减50', 1, 50.00, 0.00, 300, 6, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 0, interval '-3 days', interval '90 days 23:59:59', -1, NULL),
    (108, '连锁酒店8折', 2, 0.00, 8.00, 0, 7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 15, interval '0 days', interval '15 days', -1, NULL),
    (109, '保温杯兑换券', 1, 0.00, 0.00, 0, 8, NULL, NULL, ARRAY['1'], ARRAY['保温杯'], NULL, NULL, NULL, 1, 0, interval '-1 day', interval '1 day 23:59:59', 100, NULL),
    (110, '门店+自营商品满100减15', 1, 15.00, 0.00, 100, 9, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 0, interval '-1 day', interval '45 days 23:59:59', -1, '{"is_all_store": 0, "store_ids": [1, 2], "is_all_good": 1, "good_ids": []}'),
    (111, '全部门店指定商品9.5折', 2, 0.00, 9.50, 0, 9, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, interval '0 days', interval '0 days', -1, '{"is_all_store": 1, "store_ids": [], "is_all_good": 0, "good_ids": [1, 2]}'),
    (112, '今日到期满10减1', 1, 1.00, 0.00, 10, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 0, interval '-7 days', interval '23:59:59', -1, NULL)
) AS v(id, name, method, deduct, discount, enough, use_type, category_ids, categorynames,
       goods_ids, goods_names, storeids, storenames, suppliernames, time_limit, time_days,
       start_offset, end_offset, total, use_conditions);

INSERT INTO yz_coupon_hotel (coupon_id, hotel_id) VALUES (107, 1), (108, 1), (108, 2);

INSERT INTO yz_coupon (id, uniacid, name, coupon_method, deduct, use_type, storeids, storenames,
                       time_limit, time_days)
VALUES (201, 2, '二号商户门店券', 1, 3.00, 4, ARRAY['3'], ARRAY['二号商户门店'], 0, 30),
       (202, 2, '二号商户通用券', 1, 2.00, 0, NULL, NULL, 0, 30);

-- Member 1: the seed example's six rows, verbatim.
INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, use_time, get_time)
VALUES (155, 1, 1, 5, 0, NULL, '2017-09-26 00:00:00+08'),
       (150, 1, 1, 5, 0, NULL, '2017-09-26 00:00:00+08'),
       (146, 1, 1, 3, 0, NULL, '2017-09-26 00:00:00+08'),
       (135, 1, 1, 3, 0, NULL, '2017-09-26 00:00:00+08'),
       (134, 1, 1, 3, 0, NULL, '2017-09-26 00:00:00+08'),
       (12, 1, 1, 4, 0, NULL, '2017-08-16 00:00:00+08');

-- Member 1: one live coupon of each kind, a used one, an expired one and one they deleted.
INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, use_time, get_time, is_member_deleted)
SELECT 1000 + c.id, 1, 1, c.id, 0, NULL, now() - (c.id - 100) * interval '1 hour', 0
FROM yz_coupon AS c WHERE c.uniacid = 1 AND c.id BETWEEN 101 AND 112;
INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, use_time, get_time, is_member_deleted)
VALUES (1201, 1, 1, 101, 1, now() - interval '2 days', now() - interval '5 days', 0),
       (1202, 1, 1, 102, 0, NULL, now() - interval '40 days', 0),
       (1203, 1, 1, 101, 0, NULL, now() - interval '1 day', 1);

-- Member 2: 130 unused coupons of every kind, to scroll the sidebar's list through nine pages
-- of 15 to its end. One an hour back from now, and none of coupon 112 (it ends tonight): each
-- one is still valid for more than a day, whenever the demo is loaded.
INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, use_time, get_time)
SELECT 2000 + n, 1, 2, 101 + n % 11, 0, NULL, now() - n * interval '1 hour'
FROM generate_series(1, 130) AS n;

-- Members 3..20: a few each.
INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, get_time)
SELECT 3000 + m * 10 + k, 1, m, 101 + (m + k) % 12, CASE WHEN k = 4 THEN 1 ELSE 0 END,
       now() - (m + k) * interval '1 day'
FROM generate_series(3, 20) AS m, generate_series(0, 4) AS k;

-- Tenant 2 (both plugins off): its store coupon never shows.
INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, get_time)
VALUES (9001, 2, 1001, 201, 0, now() - interval '1 day'),
       (9002, 2, 1001, 202, 0, now() - interval '2 days'),
       (9003, 2, 1002, 202, 0, now() - interval '3 days');

-- The sidebar's contact flow: staff member `demo-staff` chats with WeCom contacts wm_demo_1 and
-- wm_demo_2 (members 1 and 2); `python -m service token --uniacid 1` prints its staff token.
INSERT INTO yz_wecom_contact (uniacid, external_userid, staff_userid, uid)
VALUES (1, 'wm_demo_1', 'demo-staff', 1), (1, 'wm_demo_2', 'demo-staff', 2);

SELECT setval(pg_get_serial_sequence('yz_coupon', 'id'), greatest((SELECT max(id) FROM yz_coupon), 1));
SELECT setval(pg_get_serial_sequence('yz_member_coupon', 'id'), greatest((SELECT max(id) FROM yz_member_coupon), 1));
SELECT setval(pg_get_serial_sequence('yz_store', 'id'), greatest((SELECT max(id) FROM yz_store), 1));
SELECT setval(pg_get_serial_sequence('yz_goods', 'id'), greatest((SELECT max(id) FROM yz_goods), 1));
SELECT setval(pg_get_serial_sequence('yz_hotel', 'id'), greatest((SELECT max(id) FROM yz_hotel), 1));


ANALYZE yz_member, yz_tenant_setting, yz_coupon, yz_member_coupon, yz_store, yz_goods, yz_hotel, yz_coupon_hotel, yz_wecom_contact;
