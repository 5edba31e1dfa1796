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
