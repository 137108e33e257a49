"""One door per library whose internals the hot path touches, each behind a version guard."""
