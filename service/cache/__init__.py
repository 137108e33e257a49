"""The cache: Redis and local layers, contact mappings, trust and the LISTEN listener."""
