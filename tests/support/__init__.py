"""Test-only helpers: the local cluster, waiting with deadlines, and test doubles."""
