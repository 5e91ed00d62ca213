"""What the tests, the demo and the benchmarks share: the local cluster and a handle on it, the
operator as a process, waiting with deadlines, the model ladder and its engine, the datasets,
graders and the answer bank. No test double lives here (they are under tests/)."""
