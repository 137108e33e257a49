-- A member coupon's end, in one place for every statement that needs it (inlined by the planner):
-- time_limit 1 -> the coupon's time_end; time_limit 0 with time_days N > 0 -> 23:59:59 (in tz) of
-- the Nth day after the day of get_time; otherwise never (NULL).
CREATE OR REPLACE FUNCTION coupon_end_at(
    time_limit smallint, time_days integer, time_end timestamptz, get_time timestamptz, tz text
) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN time_limit = 1 THEN time_end
        WHEN time_days > 0 THEN
            (date_trunc('day', get_time AT TIME ZONE tz)
             + make_interval(days => time_days) + interval '23:59:59') AT TIME ZONE tz
    END
$$;
