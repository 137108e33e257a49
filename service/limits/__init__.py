"""Rate limits per staff member and per member (GCRA in Redis, with leases)."""
