"""Benchmarks: cas-store side by side with the stores a chat server would use instead.

``python -m bench`` runs the comparison (``--quick`` for a smoke run) and writes
bench/RESULTS.md and bench/results.png. Importing this package loads nothing heavy, so
the single-purpose scripts beside it (``python -m bench.<script>``) stay cheap to start.
"""
