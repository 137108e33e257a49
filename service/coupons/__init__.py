"""The coupons domain: tabs, types and rendering rules, and the pages service."""
