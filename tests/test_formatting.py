"""Human units used by reports, metadata and the review CLI."""

import math

import pytest

from capacity_pipelines.common.formatting import cores, iec_bytes, usd, usd_per_month


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (12_345.0, "$12.3k/mo"),
        (-4_000.0, "-$4.0k/mo"),
        (950.0, "$950/mo"),
        (1.5, "$1.50/mo"),
        (2_500_000.0, "$2.50M/mo"),
        (None, "n/a"),
        (math.nan, "n/a"),
    ],
)
def test_usd_per_month(amount, text):
    assert usd_per_month(amount) == text


def test_usd_billions():
    assert usd(3.2e9) == "$3.20B"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.5, "1.5 cores"),
        (1.0, "1 core"),
        (0.25, "0.25 cores"),
        (10.0, "10 cores"),
        (12.5, "12.5 cores"),
    ],
)
def test_cores(value, text):
    assert cores(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (512 * 2**20, "512Mi"),
        (1.5 * 2**30, "1.5Gi"),
        (800 * 1024, "800Ki"),
        (3.0, "3"),
        (None, "n/a"),
    ],
)
def test_iec_bytes(value, text):
    assert iec_bytes(value) == text
