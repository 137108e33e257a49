"""Tests of service/cache/."""
