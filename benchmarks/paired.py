"""Paired comparisons of two methods run on the same tasks and seeds.

Used by the benchmarks that compare held-out scores run by run: the differences are
counted as better / equal / worse (``|d| <= tie`` is equal, so that two runs choosing
configurations of the same score tie), and tested with the two-sided Wilcoxon
signed-rank test over the pairs that differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

TIE = 1e-9


def wtl(diffs: Sequence[float], tie: float = TIE) -> tuple[int, int, int]:
    """Numbers of differences above ``tie``, within it, and below ``-tie``."""
    d = np.asarray(diffs, dtype=float)
    return int(np.sum(d > tie)), int(np.sum(np.abs(d) <= tie)), int(np.sum(d < -tie))


def wilcoxon_p(diffs: Sequence[float], tie: float = TIE) -> float:
    """Two-sided p of the Wilcoxon signed-rank test (ties dropped); NaN under 2 pairs."""
    from scipy.stats import wilcoxon

    d = np.asarray([x for x in diffs if abs(x) > tie])
    if d.size < 2:
        return math.nan
    return float(wilcoxon(d).pvalue)
