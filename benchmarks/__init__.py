"""Benchmarks of twiddle (not part of the installed package)."""
