"""What the tests, the demo and the benchmarks share: the model ladder and its engine, the
datasets, graders and the answer bank (and, over time, the local cluster)."""
