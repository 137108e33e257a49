"""Helpers shared by test modules (a test module never imports another; fixtures live in the
conftest.py of the folder whose tests use them):

- common.py: the fixed NOW, the suite's secrets, `token_for`;
- rows.py and sql/fixtures.sql: the rows a test arranges (`Rows`), on emptied tables;
- api.py: the coupons endpoint called and its answer's shape checked; params.py: a refusal that
  names its parameters; pages.py: pages read, statements counted, invalidations waited for;
- tabs.py and matrix.py: one tab read, and the hand-written status × type matrix;
- databases.py: a database of a test's own, and the contract's tables;
- cli.py (blocking) and processes.py (asynchronous): `python -m service` as a subprocess, and a
  Redis and a PostgreSQL a test may kill and restart; live.py: the app on a thread of its own;
- pg_replica.py: a streaming standby; redis_cluster.py: a 3-master Redis Cluster;
- freshness/: the judge of tests/cache/test_freshness.py.
"""
