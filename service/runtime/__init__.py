"""Running it: the CLI, the pre-fork server, embedded servers, demo data, tasks."""
