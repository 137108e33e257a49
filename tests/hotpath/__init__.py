"""Tests of service/hotpath/."""
