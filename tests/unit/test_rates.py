import pytest
from scipy.stats import binomtest

from mechref.errors import DataFormatError
from mechref.rates import Rate, rate_or_none


@pytest.mark.parametrize("k, n", [(0, 1), (0, 8), (3, 8), (8, 8), (11, 32), (85, 100), (1, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    low, high = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert Rate(k, n).interval == pytest.approx((low, high), abs=1e-9)


def test_counts_travel_with_the_rate():
    rate = Rate.of([True, True, False])
    assert rate.to_dict()["k"] == 2 and rate.to_dict()["n"] == 3 and rate.to_dict()["rate"] == pytest.approx(0.6667, abs=1e-4)
    assert str(rate) == "0.67 (2/3)"


def test_no_outcomes_is_no_rate():
    with pytest.raises(DataFormatError):
        Rate.of([])
    with pytest.raises(DataFormatError):
        Rate(3, 2)
    assert rate_or_none([]) is None


@pytest.mark.parametrize("up, down, same", [(0, 8, 3), (3, 9, 0), (5, 5, 2), (1, 0, 10), (0, 0, 4), (12, 30, 7)])
def test_mcnemar_exact_matches_scipys_binomial_test(up, down, same):
    from scipy.stats import binomtest

    from mechref.rates import mcnemar_exact

    before = [False] * up + [True] * down + [True] * same
    after = [True] * up + [False] * down + [True] * same
    got = mcnemar_exact(before, after)
    expected = binomtest(up, up + down, 0.5).pvalue if up + down else 1.0
    assert got["changed_to_true"] == up and got["changed_to_false"] == down and got["n_pairs"] == up + down + same
    assert got["p_value"] == pytest.approx(expected, rel=5e-3)


def test_paired_test_pairs_by_prompt_not_by_order():
    from mechref.rates import paired_test

    rows = [{"c": "a", "p": p, "v": v} for p, v in [("x", True), ("y", True), ("z", False)]]
    rows += [{"c": "b", "p": p, "v": v} for p, v in [("z", True), ("y", True), ("x", False), ("w", False)]]  # w: unpaired
    test = paired_test(rows, "c", "p", "v", "a", "b")
    assert (test["n_pairs"], test["changed_to_false"], test["changed_to_true"]) == (3, 1, 1)
    with pytest.raises(Exception, match="same prompts under both conditions"):
        paired_test(rows, "c", "p", "v", "a", "missing")
