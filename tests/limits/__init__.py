"""Tests of service/limits/."""
