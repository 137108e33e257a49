-- name: truncate_all#
-- Isolation between tests: every table the service reads, emptied, sequences reset.
TRUNCATE yz_member_coupon, yz_coupon, yz_coupon_hotel, yz_member, yz_store, yz_goods, yz_hotel,
         yz_tenant_setting, yz_wecom_contact RESTART IDENTITY;

-- name: insert_tenant_setting(uniacid, coupon_transfer, store_plugin, hotel_plugin, near_expiration_days)!
-- One tenant's settings row.
INSERT INTO yz_tenant_setting (uniacid, coupon_transfer, store_plugin, hotel_plugin, near_expiration_days)
VALUES (:uniacid, :coupon_transfer, :store_plugin, :hotel_plugin, :near_expiration_days);

-- name: insert_member(uid, uniacid)!
-- A member of a tenant.
INSERT INTO yz_member (uid, uniacid) VALUES (:uid, :uniacid);

-- name: insert_coupon(uniacid, name, coupon_method, deduct, discount, enough, use_type, category_ids, categorynames, goods_ids, goods_names, storeids, storenames, suppliernames, time_limit, time_days, time_start, time_end, total, money, credit, plugin_id, use_conditions)$
-- A coupon definition with every contract column; returns its id.
INSERT INTO yz_coupon (uniacid, name, coupon_method, deduct, discount, enough, use_type,
                       category_ids, categorynames, goods_ids, goods_names, storeids, storenames,
                       suppliernames, time_limit, time_days, time_start, time_end, total, money,
                       credit, plugin_id, use_conditions)
VALUES (:uniacid, :name, :coupon_method, :deduct, :discount, :enough, :use_type,
        :category_ids, :categorynames, :goods_ids, :goods_names, :storeids, :storenames,
        :suppliernames, :time_limit, :time_days, :time_start, :time_end, :total, :money,
        :credit, :plugin_id, :use_conditions)
RETURNING id;

-- name: insert_member_coupon(id, uniacid, uid, coupon_id, used, use_time, get_time, is_member_deleted)$
-- A member's coupon; an explicit id when the test needs one (ties), else the sequence's.
INSERT INTO yz_member_coupon (id, uniacid, uid, coupon_id, used, use_time, get_time, is_member_deleted)
VALUES (coalesce(:id, nextval(pg_get_serial_sequence('yz_member_coupon', 'id'))),
        :uniacid, :uid, :coupon_id, :used, :use_time, :get_time, :is_member_deleted)
RETURNING id;

-- name: insert_store(id, uniacid, store_name)!
-- A store (for use_type 9 conditions).
INSERT INTO yz_store (id, uniacid, store_name) VALUES (:id, :uniacid, :store_name);

-- name: insert_goods(id, uniacid, title)!
-- A goods item (for use_type 9 conditions).
INSERT INTO yz_goods (id, uniacid, title) VALUES (:id, :uniacid, :title);

-- name: insert_hotel(id, uniacid, hotel_name)!
-- A hotel (for use_type 6 and 7).
INSERT INTO yz_hotel (id, uniacid, hotel_name) VALUES (:id, :uniacid, :hotel_name);

-- name: insert_coupon_hotel(coupon_id, hotel_id)!
-- Which hotels a hotel coupon applies to.
INSERT INTO yz_coupon_hotel (coupon_id, hotel_id) VALUES (:coupon_id, :hotel_id);

-- name: insert_wecom_contact(uniacid, external_userid, staff_userid, uid)!
-- A staff member follows a WeCom contact, who is member :uid (the contract's columns only).
INSERT INTO yz_wecom_contact (uniacid, external_userid, staff_userid, uid)
VALUES (:uniacid, :external_userid, :staff_userid, :uid);

-- name: set_member_coupon_deleted(id, is_member_deleted)!
-- The member deletes (or restores) one of their coupons.
UPDATE yz_member_coupon SET is_member_deleted = :is_member_deleted WHERE id = :id;

-- name: drop_test_database#
-- The suite's own database on a server named by DATABASE_URL, never the one it names.
DROP DATABASE IF EXISTS coupons_test WITH (FORCE);

-- name: create_test_database#
-- Created fresh for every run (see drop_test_database).
CREATE DATABASE coupons_test;
