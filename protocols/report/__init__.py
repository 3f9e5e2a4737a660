"""The privacy/accuracy report's computations (`smpc tradeoff`): membership inference, the
workloads it compares, anonymized pooling and the DP twins."""
