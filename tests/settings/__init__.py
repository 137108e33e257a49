"""Tests of service/settings/."""
