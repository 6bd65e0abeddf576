"""Benchmarks: erq against memcached on the same workloads, in one run.

``python -m benchmarks.run --quick`` from the repository root; see
``benchmarks/README.md``.
"""
