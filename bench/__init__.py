"""Benchmarks (run as modules: `python -m bench.gemm`, `python -m bench.training_step`); not tests."""
