"""The machinery of tests/cache/test_freshness.py (whose docstring says what is judged and how):
knobs.py (sizes and bounds), model.py (states and what a page must show), world.py (the
arrangement), readers.py, writer.py, judge.py, run.py (one run against `serve`) and report.py."""
