"""The database: pools, the typed repository, the aiosql queries, migrations."""
