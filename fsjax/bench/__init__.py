"""Throughput benchmarks (train, swap, data), their roofline and the PyTorch baseline."""
