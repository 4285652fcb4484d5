"""The paired comparison the benchmarks report: counts and the Wilcoxon test without ties."""

from __future__ import annotations

import math

from benchmarks.paired import wilcoxon_p, wtl
from scipy.stats import wilcoxon


def test_counts_and_test_drop_ties() -> None:
    diffs = [0.02, -0.01, 0.0, 1e-12, 0.03, 0.05, -0.02, 0.04, 0.0]
    assert wtl(diffs) == (4, 3, 2)  # |d| <= 1e-9 counts as equal
    differ = [0.02, -0.01, 0.03, 0.05, -0.02, 0.04]
    assert wilcoxon_p(diffs) == float(wilcoxon(differ).pvalue)
    assert math.isnan(wilcoxon_p([0.0, 0.01]))  # one pair that differs: no test
