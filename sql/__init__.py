"""The SQL of the service, shipped in its wheel as the package `coupons_sql`
(service/resources.py)."""
