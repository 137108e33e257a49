-- name: notify_barrier(payload)$
-- A barrier through the invalidation channel: delivered to every listener after every
-- notification committed before it, in commit order (service/cache/listener.py proves a handover
-- with it).
SELECT pg_notify('coupons_invalidate', :payload);
