"""What only the tests use: helpers for pytest's fixtures and assertions, and test doubles (a
TGI-protocol test server, an operator double). What the benchmarks and the demo share with the
tests (the local cluster, the operator process, waiting with deadlines) is in onion_lab."""
