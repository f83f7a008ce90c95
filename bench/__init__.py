"""Benchmarks: separate programs that measure Mnemo beside its peers and write bench/results/."""
