-- The contract's tables. The mall's PHP writers know only the contract's columns, so every
-- column beyond those, and every NOT NULL one, has a default.

CREATE TABLE IF NOT EXISTS yz_member (
    uid         bigint PRIMARY KEY,
    uniacid     integer NOT NULL,
    nickname    text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS yz_member_uniacid_idx ON yz_member (uniacid);

CREATE TABLE IF NOT EXISTS yz_tenant_setting (
    uniacid               integer PRIMARY KEY,
    coupon_transfer       boolean NOT NULL DEFAULT false,
    store_plugin          boolean NOT NULL DEFAULT true,
    hotel_plugin          boolean NOT NULL DEFAULT true,
    near_expiration_days  integer NOT NULL DEFAULT 3 CHECK (near_expiration_days >= 0)
);

CREATE TABLE IF NOT EXISTS yz_coupon (
    id              bigserial PRIMARY KEY,
    uniacid         integer NOT NULL,
    name            text NOT NULL DEFAULT '',
    coupon_method   smallint NOT NULL DEFAULT 1,      -- 1 money off, 2 discount
    deduct          numeric(14, 2) NOT NULL DEFAULT 0,
    discount        numeric(14, 2) NOT NULL DEFAULT 0,
    enough          integer NOT NULL DEFAULT 0,
    use_type        smallint NOT NULL DEFAULT 0,
    category_ids    text[],
    categorynames   text[],
    goods_ids       text[],
    goods_names     text[],
    storeids        text[],
    storenames      text[],
    suppliernames   text[],
    time_limit      smallint NOT NULL DEFAULT 0,      -- 0 N days after receipt, 1 fixed range
    time_days       integer NOT NULL DEFAULT 0,
    time_start      timestamptz,
    time_end        timestamptz,
    total           integer NOT NULL DEFAULT -1,
    money           numeric(14, 2) NOT NULL DEFAULT 0,
    credit          integer NOT NULL DEFAULT 0,
    plugin_id       integer NOT NULL DEFAULT 0,
    use_conditions  jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS yz_coupon_uniacid_idx ON yz_coupon (uniacid);

CREATE TABLE IF NOT EXISTS yz_member_coupon (
    id                  bigserial PRIMARY KEY,
    uniacid             integer NOT NULL,
    uid                 bigint NOT NULL,
    coupon_id           bigint NOT NULL,
    used                smallint NOT NULL DEFAULT 0,
    use_time            timestamptz,
    get_time            timestamptz NOT NULL DEFAULT now(),
    is_member_deleted   smallint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- Every tab reads one member's visible rows newest first: a range scan of this partial
-- index in exactly the response order, so a first page stops after `pagesize` matches.
CREATE INDEX IF NOT EXISTS yz_member_coupon_member_page_idx
    ON yz_member_coupon (uniacid, uid, used, get_time DESC, id DESC)
    WHERE is_member_deleted = 0;
CREATE INDEX IF NOT EXISTS yz_member_coupon_coupon_idx ON yz_member_coupon (coupon_id);

CREATE TABLE IF NOT EXISTS yz_store (
    id          bigserial PRIMARY KEY,
    uniacid     integer NOT NULL,
    store_name  text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS yz_goods (
    id          bigserial PRIMARY KEY,
    uniacid     integer NOT NULL,
    title       text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS yz_hotel (
    id          bigserial PRIMARY KEY,
    uniacid     integer NOT NULL,
    hotel_name  text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS yz_coupon_hotel (
    coupon_id   bigint NOT NULL,
    hotel_id    bigint NOT NULL,
    PRIMARY KEY (coupon_id, hotel_id)
);
