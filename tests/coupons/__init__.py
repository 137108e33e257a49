"""Tests of service/coupons/."""
