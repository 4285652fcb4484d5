"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest

import pytest

from twiddle import _cv, _space, _study

MODULES = [_space, _study, _cv]


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
