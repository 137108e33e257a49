"""The hot path: a resolved request answered from the local layer without a coroutine."""
