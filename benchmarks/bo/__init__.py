"""Benchmark harness for Bayesian optimisation.

Synthetic test functions with known optima and Bayesmark-style scikit-learn tuning
tasks, run by twiddle's samplers and by Optuna's, with best-so-far curves, normalised
scores, held-out scores and the time each optimiser spends per suggestion.

Run ``python -m benchmarks.bo.run --help``; rebuild the table with
``python -m benchmarks.bo.report``. See ``benchmarks/bo/README.md``.
"""
