"""Trained models and their PDFs are bit-for-bit those of the stored reference runs (one thread).

The reference hashes (``tests/data/reference_hashes.json``) pin behaviour across refactoring;
see ``tests/reference_cases.py`` for the cases and how to regenerate them after an intended change.
"""

import pytest

from reference_cases import load_hashes, run_case

QUICK = ["tiny", "tiny_transfer", "tiny_exposures"]


def _check(name: str) -> None:
    got, want = run_case(name), load_hashes()[name]
    assert got == want, (f"case {name!r} no longer reproduces its reference hashes: {got} != {want}; if the change "
                         "of behaviour is intended, run `python tests/reference_cases.py --write {name}`")


@pytest.mark.parametrize("name", QUICK)
def test_small_models_reproduce_their_reference(name):
    _check(name)


@pytest.mark.slow
def test_default_model_reproduces_its_reference():
    _check("default")
