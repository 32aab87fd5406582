"""Frontier reading (ratio at a quality bar, with the interpolation stated) and paired comparisons."""

from __future__ import annotations

import math

import pytest

from kakeya_lib.errors import InputError
from kakeya_lib.experiments import frontier


def pts(*pairs):
    return [{"ratio_vs_bf16": r, "kl_mean": k, "delta_ppl_pct": k * 100, "protect_tokens": 1} for r, k in pairs]


def test_ratio_at_kl_interpolates_log_kl_between_the_bracketing_points():
    series = pts((3.0, 0.002), (4.0, 0.004), (5.0, 0.016))
    got = frontier.ratio_at(series, 0.008)
    # log-linear between (4, 0.004) and (5, 0.016): 0.008 is half way in log
    assert got.kind == "interpolated" and got.ratio == pytest.approx(4.5)
    assert frontier.ratio_at(series, 0.004).ratio == pytest.approx(4.0)


def test_ratio_at_reports_its_range_instead_of_extrapolating():
    series = pts((3.0, 0.002), (4.0, 0.004))
    above = frontier.ratio_at(series, 0.1)
    assert above.kind == "above_range" and above.ratio == 4.0 and above.text() == "≥ 4.00"
    below = frontier.ratio_at(series, 0.001)
    assert below.kind == "below_range" and below.ratio is None and below.text() == "--"


def test_ratio_at_takes_the_last_crossing_of_a_non_monotone_series_and_delta_ppl_is_linear():
    series = pts((2.0, 0.001), (3.0, 0.02), (4.0, 0.005), (5.0, 0.05))
    assert 4.0 < frontier.ratio_at(series, 0.01).ratio < 5.0
    lin = frontier.ratio_at([{"ratio_vs_bf16": 4, "delta_ppl_pct": 0.5}, {"ratio_vs_bf16": 6, "delta_ppl_pct": 1.5}],
                            1.0, "delta_ppl_pct")
    assert lin.ratio == pytest.approx(5.0)
    with pytest.raises(InputError):
        frontier.ratio_at(series, 0.01, "mse")


def test_ratio_at_ci_brackets_the_reading_and_collapses_without_passage_spread():
    import numpy as np

    series = pts((3.0, 0.002), (4.0, 0.004), (5.0, 0.016))
    flat = np.array([[0.002] * 8, [0.004] * 8, [0.016] * 8])
    lo, hi = frontier.ratio_at_ci(series, flat, 0.008)
    assert lo.ratio == pytest.approx(4.5) and hi.ratio == pytest.approx(4.5)
    rng = np.random.default_rng(1)
    noisy = flat[:, :1] * rng.lognormal(0.0, 0.5, size=(1, 48))  # passages harder or easier for every point
    point = frontier.ratio_at(pts(*zip([3.0, 4.0, 5.0], noisy.mean(axis=1))), 0.008).ratio
    lo, hi = frontier.ratio_at_ci(series, noisy, 0.008)
    assert lo.ratio < point < hi.ratio and hi.ratio - lo.ratio > 0.05
    # a bar no resample can meet, and one every resample meets
    assert frontier.ratio_at_ci(series, flat, 0.001)[1].text() == "--"
    assert frontier.ratio_at_ci(series, flat, 0.1)[0].text() == "≥ 5.00"
    with pytest.raises(InputError, match="per_passage_kl"):
        frontier.ratio_at_ci(series, flat[:2], 0.008)


def test_paired_difference_sees_a_small_consistent_gap_and_refuses_other_passages():
    a = {"per_passage": [{"kl_mean": 0.010 + 0.001 * (i % 5)} for i in range(48)]}
    b = {"per_passage": [{"kl_mean": 0.012 + 0.001 * (i % 5)} for i in range(48)]}
    d = frontier.paired_difference(a, b)
    assert d.mean == pytest.approx(-0.002) and d.hi < 0 and d.decided
    same = frontier.paired_difference(a, a)
    assert same.mean == 0 and not same.decided
    with pytest.raises(InputError, match="different passages"):
        frontier.paired_difference(a, b, passage_ids=(["p0"], ["p1"]))
    with pytest.raises(InputError):
        frontier.paired_difference(a, {"per_passage": a["per_passage"][:3]})


def test_frontier_table_has_one_row_per_series_with_its_exact_tokens():
    rows = frontier.frontier_table({"ours": pts((4.0, 0.004), (6.0, 0.016)),
                                    "peer": [dict(p, protect_tokens=4, hot_tokens=128) for p in pts((3.0, 0.02))]})
    assert rows[0]["exact_tokens"] == "sink 1" and rows[1]["exact_tokens"] == "sink 4 + recent 128"
    assert rows[0]["kl<=0.01 kind"] == "interpolated" and math.isclose(rows[0]["kl<=0.01 ratio"], 4 + 2 * math.log(2.5) / math.log(4))
    assert rows[1]["kl<=0.01"] == "--"


def test_at_ratio_interpolates_each_passage_in_log_kl_and_never_extrapolates():
    rows = [{"ratio_vs_bf16": 4.0, "plan": "b4"}, {"ratio_vs_bf16": 3.0, "plan": "b3"}]
    results = [{"per_passage": [{"kl_mean": 0.04}, {"kl_mean": 0.4}]},
               {"per_passage": [{"kl_mean": 0.01}, {"kl_mean": 0.1}]}]
    mid = frontier.at_ratio(rows, results, 3.5)
    # half way between 3x and 4x: the geometric mean of each passage's two KLs
    assert mid["between"] == ("b3", "b4") and mid["weight"] == pytest.approx(0.5)
    assert [p["kl_mean"] for p in mid["per_passage"]] == pytest.approx([0.02, 0.2])
    exact = frontier.at_ratio(rows, results, 4.0)
    assert exact["between"] == ("b4", "b4") and [p["kl_mean"] for p in exact["per_passage"]] == pytest.approx([0.04, 0.4])
    lin = frontier.at_ratio([{"ratio_vs_bf16": 3.0, "plan": "a"}, {"ratio_vs_bf16": 5.0, "plan": "b"}],
                            [{"per_passage": [{"delta_ppl_pct": 1.0}]}, {"per_passage": [{"delta_ppl_pct": 3.0}]}],
                            4.5, "delta_ppl_pct")
    assert lin["per_passage"][0]["delta_ppl_pct"] == pytest.approx(2.5)
    assert frontier.at_ratio(rows, results, 4.5) is None and frontier.at_ratio(rows, results, 2.0) is None
    with pytest.raises(InputError, match="equal length"):
        frontier.at_ratio(rows, [results[0], {"per_passage": results[1]["per_passage"][:1]}], 3.5)
    with pytest.raises(InputError, match="2 points but 1 results"):
        frontier.at_ratio(rows, results[:1], 3.5)
