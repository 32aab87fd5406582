"""Rate–quality frontiers: each codec's ratio at a quality bar, and paired comparisons.

A *series* is one codec swept over its rate knob (a frontier cell of :mod:`.e2e`), all points
on the same passages. :func:`ratio_at` reads a series' compression ratio at a quality bar
(``kl_mean <= 0.01``, ``delta_ppl_pct <= 1``) from its measured points:

* the points are ordered by ratio; the answer is the largest ratio at which the piecewise-linear
  curve through them meets the bar (for KL the curve is linear in ``log KL`` against the ratio,
  for Δppl linear in Δppl), so a series is credited only up to its last crossing;
* ``kind`` says how it was read: ``measured`` (a point sits exactly on the bar), ``interpolated``
  (between the two points that bracket the bar), ``above_range`` (every point meets the bar: the
  value is the largest measured ratio, a lower bound) or ``below_range`` (no point meets it:
  ``None``). There is no extrapolation.

:func:`paired_difference` compares two rows measured on the same passages: the bootstrap CI of
the mean per-passage difference (passages resampled together), the test a claim "A beats B"
rests on. :func:`at_ratio` matches the rate first: it reads a series' per-passage quality at
any ratio inside its measured range by interpolating each passage between the two points that
bracket it (in log KL, as :func:`ratio_at` does), so a peer is compared at exactly our ratio
rather than at its nearest point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError

QUALITY_METRICS = ("kl_mean", "delta_ppl_pct")


@dataclass(frozen=True)
class RatioAt:
    """A series' ratio at a quality bar (see the module docstring for ``kind``)."""

    ratio: float | None
    kind: str
    metric: str
    target: float

    def text(self, digits: int = 2) -> str:
        """``"5.31"``, ``"≥ 6.02"`` (every point met the bar) or ``"< 3.55"`` / ``"--"``."""
        if self.ratio is None:
            return "--"
        value = f"{self.ratio:.{digits}f}"
        return f"≥ {value}" if self.kind == "above_range" else value


def _curve_value(metric: str, value: float) -> float:
    if metric == "kl_mean":
        return math.log(max(value, 1e-12))  # KL spans decades: interpolate its logarithm
    return value


def ratio_at(points: Sequence[Mapping[str, Any]], target: float, metric: str = "kl_mean") -> RatioAt:
    """The largest ratio at which the series meets ``metric <= target`` (module docstring)."""
    if metric not in QUALITY_METRICS:
        raise InputError(f"metric must be one of {QUALITY_METRICS}, got {metric!r}")
    pts = sorted((float(p["ratio_vs_bf16"]), float(p[metric])) for p in points if p.get(metric) is not None)
    if not pts:
        raise InputError("a series needs at least one point with a ratio and a quality value")
    if all(q <= target for _, q in pts):
        return RatioAt(pts[-1][0], "above_range", metric, target)
    best: RatioAt | None = None
    y_t = _curve_value(metric, target)
    for (r1, q1), (r2, q2) in zip(pts, pts[1:]):
        if q1 <= target < q2:  # the curve leaves the bar between these two points
            y1, y2 = _curve_value(metric, q1), _curve_value(metric, q2)
            if q1 == target:
                best = RatioAt(r1, "measured", metric, target)
            else:
                best = RatioAt(r1 + (r2 - r1) * (y_t - y1) / (y2 - y1), "interpolated", metric, target)
    if best is None and pts[0][1] <= target:  # only a bar met at the first point, then never left...
        best = RatioAt(pts[0][0], "measured", metric, target)
    return best or RatioAt(None, "below_range", metric, target)


def at_ratio(points: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]], ratio: float,
             metric: str = "kl_mean") -> dict[str, Any] | None:
    """A series' per-passage ``metric`` at ``ratio``, interpolated between its bracketing points.

    Parameters
    ----------
    points : the series' rows (``ratio_vs_bf16``, ``plan``), one per point
    results : the matching full results, each with a ``per_passage`` list (same passages, same order)
    ratio : where to read the series; must lie inside its measured ratio range
    metric : ``kl_mean`` (interpolated in log, KL spans decades) or ``delta_ppl_pct`` (linear)

    Returns
    -------
    ``{"per_passage": [{metric: value}, ...], "between": (plan_lo, plan_hi), "weight": w}`` with
    ``w`` the share of the upper point, or ``None`` when ``ratio`` lies outside the measured range
    (there is no extrapolation). Where several pairs bracket ``ratio`` (a non-monotone series) the
    pair with the largest ratios is used, as :func:`ratio_at` credits the last crossing.
    """
    if metric not in QUALITY_METRICS:
        raise InputError(f"metric must be one of {QUALITY_METRICS}, got {metric!r}")
    if len(points) != len(results):
        raise InputError(f"{len(points)} points but {len(results)} results")
    order = sorted(range(len(points)), key=lambda i: float(points[i]["ratio_vs_bf16"]))
    ratios = [float(points[i]["ratio_vs_bf16"]) for i in order]
    if not ratios or not ratios[0] <= ratio <= ratios[-1]:
        return None
    for j in range(len(order) - 1, -1, -1):
        if ratios[j] == ratio:  # a measured point: no interpolation
            lo = hi = order[j]
            w = 0.0
            break
        if j > 0 and ratios[j - 1] < ratio < ratios[j]:
            lo, hi = order[j - 1], order[j]
            w = (ratio - ratios[j - 1]) / (ratios[j] - ratios[j - 1])
            break
    pa, pb = results[lo].get("per_passage") or [], results[hi].get("per_passage") or []
    if not pa or len(pa) != len(pb):
        raise InputError(f"interpolation needs per-passage results of equal length, got {len(pa)} and {len(pb)}")
    per = []
    for x, y in zip(pa, pb):
        a, b = float(x[metric]), float(y[metric])
        if metric == "kl_mean":
            value = math.exp((1 - w) * _curve_value(metric, a) + w * _curve_value(metric, b))
        else:
            value = (1 - w) * a + w * b
        per.append({metric: value})
    return {"per_passage": per, "between": (points[lo]["plan"], points[hi]["plan"]), "weight": w}


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-passage difference ``a − b`` of one metric with its bootstrap 95 % CI."""

    metric: str
    mean: float
    lo: float
    hi: float
    n_passages: int

    @property
    def decided(self) -> bool:
        """Whether the interval excludes zero."""
        return self.lo > 0 or self.hi < 0


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any], metric: str = "kl_mean", n_boot: int = 2000,
                      seed: int = 0, passage_ids: tuple[Sequence[str], Sequence[str]] | None = None
                      ) -> PairedDifference:
    """Paired bootstrap of ``a − b`` over passages.

    Parameters
    ----------
    a, b : full results (``evaluate`` dicts) with ``per_passage`` lists of equal length
    metric : a per-passage field (``kl_mean``, ``delta_ppl_pct``, ``top1_pct``)
    passage_ids : the passage ids of a's and b's cells; when given they must be identical
        (a paired comparison on different passages is refused)
    """
    pa, pb = a.get("per_passage") or [], b.get("per_passage") or []
    if not pa or len(pa) != len(pb):
        raise InputError(f"paired comparison needs per-passage results of equal length, got {len(pa)} and {len(pb)}")
    if passage_ids is not None and list(passage_ids[0]) != list(passage_ids[1]):
        raise InputError("paired comparison of rows measured on different passages")
    diff = np.array([float(x[metric]) - float(y[metric]) for x, y in zip(pa, pb)])
    if diff.size < 2:
        return PairedDifference(metric, float(diff.mean()), float("nan"), float("nan"), int(diff.size))
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(n_boot, diff.size))
    lo, hi = np.percentile(diff[idx].mean(axis=1), [2.5, 97.5])
    return PairedDifference(metric, float(diff.mean()), float(lo), float(hi), int(diff.size))


def ratio_at_ci(points: Sequence[Mapping[str, Any]], per_passage_kl: np.ndarray, target: float,
                n_boot: int = 2000, seed: int = 0) -> tuple[RatioAt, RatioAt]:
    """95 % percentile-bootstrap interval of :func:`ratio_at` for ``kl_mean <= target``.

    Passages are resampled together for every point of the series (they are the same passages),
    each point's KL is the mean over the resample, and the series is read again; the points'
    ratios stay as measured (their bytes vary far less than their KL across passages).

    Parameters
    ----------
    points : the series' rows (``ratio_vs_bf16``), in the order of ``per_passage_kl``'s rows
    per_passage_kl : (P, N) array, each point's KL on each of the N passages

    Returns
    -------
    (lo, hi) : the 2.5th and 97.5th percentiles as :class:`RatioAt`; a resample in which no point
    meets the bar counts as the lowest reading (``lo`` is then ``below_range``), one in which every
    point does as the largest measured ratio (``hi`` is then ``above_range``, a lower bound).
    """
    kl = np.asarray(per_passage_kl, dtype=np.float64)
    if kl.ndim != 2 or kl.shape[0] != len(points) or kl.shape[1] < 2:
        raise InputError(f"per_passage_kl must be (points={len(points)}, passages >= 2), got {kl.shape}")
    idx = np.random.default_rng(seed).integers(0, kl.shape[1], size=(n_boot, kl.shape[1]))
    readings = []
    for means in kl[:, idx].mean(axis=2).T:  # (n_boot, P): each resample's KL per point
        r = ratio_at([{"ratio_vs_bf16": p["ratio_vs_bf16"], "kl_mean": m} for p, m in zip(points, means)],
                     target, "kl_mean")
        readings.append(r)
    values = np.array([-math.inf if r.ratio is None else r.ratio for r in readings])
    lo_v, hi_v = np.percentile(values, [2.5, 97.5], method="inverted_cdf")
    top = max(float(p["ratio_vs_bf16"]) for p in points)

    def bound(v: float) -> RatioAt:
        if v == -math.inf:
            return RatioAt(None, "below_range", "kl_mean", target)
        return RatioAt(float(v), "above_range" if v == top and any(r.kind == "above_range" for r in readings)
                       else "interpolated", "kl_mean", target)

    return bound(lo_v), bound(hi_v)


def frontier_table(series: Mapping[str, Sequence[Mapping[str, Any]]], kl_targets: Sequence[float] = (0.005, 0.01, 0.02),
                   ppl_target: float = 1.0, per_passage_kl: Mapping[str, np.ndarray] | None = None,
                   ci_target: float = 0.01) -> list[dict[str, Any]]:
    """One row per series: its ratio at each KL target and at Δppl <= ``ppl_target`` %; with
    ``per_passage_kl`` ((P, N) per series), also the bootstrap interval of the ratio at
    KL <= ``ci_target`` (:func:`ratio_at_ci`) as ``"kl<=<t> ci"``."""
    rows = []
    for name, points in series.items():
        model_bytes = max((int(p.get("kvtc_artifact_bytes") or 0) for p in points), default=0)
        row: dict[str, Any] = {"series": name, "points": len(points), "exact_tokens": _exact_tokens(points),
                               # per-model calibration tables (KVTC's bases): not in the per-prompt ratio
                               "model_bytes": model_bytes or None}
        for t in kl_targets:
            r = ratio_at(points, t, "kl_mean")
            row[f"kl<={t:g}"] = r.text()
            row[f"kl<={t:g} ratio"] = r.ratio
            row[f"kl<={t:g} kind"] = r.kind
        if per_passage_kl is not None and name in per_passage_kl:
            lo, hi = ratio_at_ci(points, per_passage_kl[name], ci_target)
            row[f"kl<={ci_target:g} ci"] = "--" if hi.ratio is None else f"[{lo.text()}, {hi.text()}]"
        r = ratio_at(points, ppl_target, "delta_ppl_pct")
        row[f"dppl<={ppl_target:g}"] = r.text()
        row[f"dppl<={ppl_target:g} ratio"] = r.ratio
        row[f"dppl<={ppl_target:g} kind"] = r.kind
        rows.append(row)
    return rows


def _exact_tokens(points: Sequence[Mapping[str, Any]]) -> str:
    """``"sink 1"``, ``"sink 4 + recent 128"``, ``"none"`` (the series' exact tokens; mixed → ``mixed``)."""
    kinds = {(int(p.get("protect_tokens") or 0), int(p.get("hot_tokens") or 0), int(p.get("boundary") or 0))
             for p in points}
    if len(kinds) != 1:
        return "mixed"
    sink, recent, boundary = kinds.pop()
    parts = ([f"sink {sink}"] if sink else []) + ([f"recent {recent}"] if recent else []) + (
        [f"{boundary}+{boundary} boundary layers"] if boundary else [])
    return " + ".join(parts) or "none"


def pareto_front(rows: Sequence[Mapping[str, Any]], x: str = "ratio_vs_bf16", y: str = "delta_ppl_pct"
                 ) -> list[Mapping[str, Any]]:
    """Rows not dominated by another (higher ``x`` is better, lower ``y`` is better), by ``x``.

    The quality-at-ratio frontier: for every ratio, the best quality any configuration reached
    there. Ties on both columns keep the first row.
    """
    ordered = sorted(rows, key=lambda r: (-float(r[x]), float(r[y])))
    front: list[Mapping[str, Any]] = []
    best = float("inf")
    for r in ordered:
        if float(r[y]) < best:
            front.append(r)
            best = float(r[y])
    return front[::-1]
