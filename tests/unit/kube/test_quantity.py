"""Kubernetes quantities: parsed as the API machinery parses them, formatted back exactly."""

from __future__ import annotations

import pytest

from gpuwatch.kube.objects.quantity import format_quantity, parse_quantity
from gpuwatch.model.errors import SourceBadResponse

# --- quantities ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", 8.0),
        ("0", 0.0),
        ("500m", 0.5),
        ("1500m", 1.5),
        ("0.5", 0.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("+2", 2.0),
        ("-1", -1.0),
        ("100n", 1e-7),
        ("250u", 0.00025),
        ("1k", 1e3),
        ("2M", 2e6),
        ("3G", 3e9),
        ("1T", 1e12),
        ("1P", 1e15),
        ("1E", 1e18),
        ("1Ki", 1024.0),
        ("512Mi", 512 * 2.0**20),
        ("768Gi", 768 * 2.0**30),
        ("1.5Gi", 1.5 * 2.0**30),
        ("2Ti", 2 * 2.0**40),
        ("1Pi", 2.0**50),
        ("1Ei", 2.0**60),
        ("1e3", 1000.0),
        ("1E3", 1000.0),
        ("12e-3", 0.012),
        ("1.5e+2", 150.0),
        (16, 16.0),
        (0.25, 0.25),
    ],
)
def test_quantities_parse_like_the_api_machinery(text, value):
    assert parse_quantity(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(
    "text", ["", "abc", "1x", "1 Gi", "Gi", "1e", "1gi", "1KiB", "--1", ".", "1.2.3", "1mm", "0x10"]
)
def test_malformed_quantities_name_where_they_are(text):
    with pytest.raises(SourceBadResponse, match=r"pod a/b: spec\.containers\[0\].*malformed"):
        parse_quantity(text, "pod a/b: spec.containers[0].resources.requests['cpu']")


@pytest.mark.parametrize("value", [None, True, [1], {"a": 1}, float("nan")])
def test_quantities_of_the_wrong_type_are_refused(value):
    with pytest.raises(SourceBadResponse, match="where"):
        parse_quantity(value, "where")


@pytest.mark.parametrize(
    "value", [8.0, 0.5, 0.25, 96.0, 768 * 2.0**30, 16 * 2.0**20, 1.5, 1e-3, 1024.0, 0.1]
)
def test_formatted_quantities_parse_back_exactly(value):
    assert parse_quantity(format_quantity(value)) == value


def test_format_prefers_the_units_kubernetes_writes():
    assert format_quantity(768 * 2.0**30) == "768Gi"
    assert format_quantity(0.5) == "500m"
    assert format_quantity(8.0) == "8"
