"""The default settings, shipped in the wheel as the package `coupons_config`
(service/resources.py)."""
