"""Table builders over the end-to-end store cells (what ``render-e2e`` writes, with tests).

* :func:`series_points`: a setting's frontier series (one cell per series) as ``{series: rows}``;
* :func:`frontier_summary`: per setting and series, the ratio at KL <= 0.005 / 0.01 / 0.02 and
  at Δppl <= 1 % (:func:`.frontier.ratio_at`: log-KL interpolation between measured points);
* :func:`paired_at_matched_ratio`: our headline recipe against each peer series at our ratio (the
  peer's per-passage KL interpolated between its two bracketing points; its nearest point when
  our ratio is outside its range) and the paired bootstrap CI of the per-passage KL difference;
* :func:`gain_rows`: "where the gain comes from": our parts removed from the tuned recipe (the
  ``gain`` table cell; each removal's KL cost against our series at the same ratio, paired) beside
  the peer with each part added (its frontier series);
* :func:`tuning_rows`: the tuning cell, its selected rows marked.

Every builder reads only the store, so the render notebook stays a thin caller.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..store import CellResult, Store
from .frontier import at_ratio, frontier_table, paired_difference

KL_TARGETS = (0.005, 0.01, 0.02)
PPL_TARGET = 1.0


def settings(store: Store, profile: str) -> list[tuple[str, str]]:
    """(model, corpus) pairs that have frontier cells, sorted."""
    return sorted({(c.cell.model, c.cell.corpus) for c in store.cells(profile, "e2e/frontier")
                   if "series" in c.cell.params})


def series_cells(store: Store, profile: str, model: str, corpus: str) -> dict[str, CellResult]:
    """The frontier cell of each series (the one with most passages when a series has several sizes)."""
    best: dict[str, CellResult] = {}
    for c in store.cells(profile, "e2e/frontier", model, corpus):
        if "series" not in c.cell.params:
            continue  # a frontier cell of the format before series existed (one grid of our steps)
        name = str(c.cell.params["series"])
        size = (c.cell.params.get("n_passages", 0), c.cell.params.get("ctx", 0))
        old = best.get(name)
        if old is None or size > (old.cell.params.get("n_passages", 0), old.cell.params.get("ctx", 0)):
            best[name] = c
    return best


def _ours_first(names: Iterable[str]) -> list[str]:
    """Series names in the tables' stable order: ours first, then alphabetical."""
    return sorted(names, key=lambda s: (not s.startswith("ours"), s))


def series_points(store: Store, profile: str, model: str, corpus: str) -> dict[str, list[dict[str, Any]]]:
    """``{series: rows}`` of one setting, series in a stable order (ours first)."""
    cells = series_cells(store, profile, model, corpus)
    return {s: list(cells[s].rows) for s in _ours_first(cells)}


def series_per_passage(store: Store, profile: str, model: str, corpus: str, metric: str = "kl_mean"
                       ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Every frontier point of one setting and its per-passage ``metric``: ``(rows, (P, N) array)``.

    All series of a setting are measured on the same passages; a cell on other passages is refused.
    """
    rows: list[dict[str, Any]] = []
    values: list[list[float]] = []
    ids = None
    for name, cell in series_cells(store, profile, model, corpus).items():
        cell = _with_results(store, cell)
        got = cell.results.get("passage_ids")
        if ids is None:
            ids = got
        elif got != ids:
            raise InputError(f"series {name!r} of {model}/{corpus} was measured on other passages")
        for r, res in zip(cell.rows, cell.results["results"]):
            rows.append(dict(r, series=name))
            values.append([float(p[metric]) for p in res["per_passage"]])
    return rows, np.array(values, dtype=np.float64).reshape(len(rows), -1)


def coded_layers_ratio(result: Mapping[str, Any]) -> float | None:
    """bf16 bytes over stored bytes of the coded layers alone (from a result's ``per_layer``).

    On a model whose cache the plan codes only in part (Gemma-3: 3 full-attention layers of 18,
    the sliding-window ones kept bf16) the whole-cache ratio is bounded by the uncoded layers and
    hides the codecs' differences; this one reads them. None without per-layer tallies.
    """
    coded = [layer for layer in result.get("per_layer") or [] if layer.get("compressed")]
    stored = sum(layer["k_bytes"] + layer["v_bytes"] + layer["hot_bytes"] + layer["protected_bytes"] for layer in coded)
    return sum(layer["bf16_bytes"] for layer in coded) / stored if stored else None


def coded_series_points(store: Store, profile: str, model: str, corpus: str) -> dict[str, list[dict[str, Any]]] | None:
    """:func:`series_points` with each point's ratio over the coded layers alone
    (:func:`coded_layers_ratio`), or None when the setting codes every layer (the two ratios agree
    within 1 %) or a series has no per-layer tallies. For a model whose uncoded layers bound every
    codec's whole-cache ratio (Gemma-3), this is the ratio that tells the codecs apart.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    cells = series_cells(store, profile, model, corpus)
    for name in _ours_first(cells):
        rows = _coded_rows(store, cells[name])
        if rows is None:
            return None
        out[name] = rows
    differs = any(abs(c["ratio_vs_bf16"] / r["ratio_vs_bf16"] - 1) > 0.01
                  for name, rows in out.items() for c, r in zip(rows, cells[name].rows))
    return out if differs else None


def _coded_rows(store: Store, cell: CellResult) -> list[dict[str, Any]] | None:
    """A series cell's rows with the coded-layers ratio as ``ratio_vs_bf16``; None without per-layer tallies."""
    ratios = [coded_layers_ratio(res) for res in _with_results(store, cell).results["results"]]
    if any(r is None for r in ratios):
        return None
    return [dict(row, ratio_vs_bf16=r) for row, r in zip(cell.rows, ratios)]


def frontier_summary(store: Store, profile: str, kl_targets: Sequence[float] = KL_TARGETS,
                     ppl_target: float = PPL_TARGET) -> list[dict[str, Any]]:
    """One row per setting and series: ratios at the quality bars (see :mod:`.frontier`).

    ``coded kl<=0.01``: the same reading at KL <= 0.01 with each point's coded-layers ratio
    (:func:`coded_layers_ratio`), for settings that leave some layers uncoded.
    """
    out = []
    for model, corpus in settings(store, profile):
        cells = {name: _with_results(store, cell) for name, cell in series_cells(store, profile, model, corpus).items()}
        points = {name: list(cell.rows) for name, cell in cells.items()}
        per_passage = {name: np.array([[float(p["kl_mean"]) for p in res["per_passage"]]
                                       for res in cell.results["results"]]) for name, cell in cells.items()}
        coded = {name: rows for name, cell in cells.items() if (rows := _coded_rows(store, cell)) is not None}
        coded_rows = {r["series"]: r for r in frontier_table(coded, (0.01,), ppl_target)}
        for row in frontier_table({s: points[s] for s in _ours_first(points)}, kl_targets, ppl_target,
                                  per_passage_kl=per_passage):
            reading = coded_rows.get(row["series"])
            out.append({"model": model, "corpus": corpus, **row,
                        "coded kl<=0.01": reading["kl<=0.01"] if reading else None,
                        "coded kl<=0.01 ratio": reading["kl<=0.01 ratio"] if reading else None})
    return out


def _with_results(store: Store, cell: CellResult) -> CellResult:
    return cell if cell.results is not None else store.load(cell.cell, with_results=True)


def paired_at_matched_ratio(store: Store, profile: str, model: str, corpus: str, ours_plan: str,
                            ours_series: str = "ours") -> list[dict[str, Any]]:
    """Our point ``ours_plan`` against every other series at the same ratio.

    Inside a peer's measured ratio range its per-passage KL is interpolated at our ratio
    (:func:`.frontier.at_ratio`, ``match = "interpolated"``). Outside it, the peer's point nearest
    our ratio is taken and our own series is read at that point's ratio when it lies inside our
    measured range (``match = "ours interpolated"``: still equal bytes, at the peer's ratio);
    otherwise the two points are compared as they are (``match = "nearest"``, each at its own ratio:
    a dominance reading, not a matched one). Rows: peer series and what was compared, both ratios,
    both KLs (means over passages), and the paired bootstrap 95 % CI of the per-passage KL
    difference (ours − peer; negative = ours better) on the shared passages.
    """
    cells = series_cells(store, profile, model, corpus)
    if ours_series not in cells:
        return []
    ours_cell = _with_results(store, cells[ours_series])
    try:
        i = [r["plan"] for r in ours_cell.rows].index(ours_plan)
    except ValueError:
        return []
    ours_row, ours_res = ours_cell.rows[i], ours_cell.results["results"][i]
    ours_ids, ratio = ours_cell.results.get("passage_ids"), float(ours_row["ratio_vs_bf16"])
    out = []
    for name, cell in cells.items():
        if name == ours_series:
            continue
        cell = _with_results(store, cell)
        ours_at, ours_at_ratio = ours_res, ratio
        peer = at_ratio(cell.rows, cell.results["results"], ratio, "kl_mean")
        if peer is not None:
            lo, hi = peer["between"]
            peer_plan, peer_ratio, match = (lo if lo == hi else f"{lo} .. {hi}"), ratio, "interpolated"
        else:
            j = min(range(len(cell.rows)), key=lambda k: abs(cell.rows[k]["ratio_vs_bf16"] - ratio))
            peer, peer_plan = cell.results["results"][j], cell.rows[j]["plan"]
            peer_ratio, match = float(cell.rows[j]["ratio_vs_bf16"]), "nearest"
            ours_read = at_ratio(ours_cell.rows, ours_cell.results["results"], peer_ratio, "kl_mean")
            if ours_read is not None:
                ours_at, ours_at_ratio, match = ours_read, peer_ratio, "ours interpolated"
        diff = paired_difference(ours_at, peer, "kl_mean", passage_ids=(ours_ids, cell.results.get("passage_ids")))
        peer_kl = sum(float(p["kl_mean"]) for p in peer["per_passage"]) / len(peer["per_passage"])
        ours_kl = sum(float(p["kl_mean"]) for p in ours_at["per_passage"]) / len(ours_at["per_passage"])
        out.append({"series": name, "peer_plan": peer_plan, "match": match, "ours_ratio": ours_at_ratio,
                    "peer_ratio": peer_ratio, "ours_kl": ours_kl, "peer_kl": peer_kl, "kl_diff": diff.mean,
                    "kl_diff_lo": diff.lo, "kl_diff_hi": diff.hi, "decided": diff.decided,
                    "n_passages": diff.n_passages})
    return out


def gain_rows(store: Store, profile: str, model: str, corpus: str, recipe: str, peer_series: Sequence[str] = (
        "TurboQuant", "TurboQuant +sink", "TurboQuant +sink +entropy"), peer_point: str = "bits=4",
              table: str = "gain", ours_series: str = "ours") -> list[dict[str, Any]]:
    """The peer with each of our parts added, then ``recipe`` (its point on the ``ours_series``
    series) and the ``table`` head-to-head cell's rows: the recipe with each part removed or changed.

    Each "ours − part" row also carries the rate-matched cost of the change: its per-passage KL
    minus the ``ours_series`` KL read at the row's own ratio (:func:`.frontier.at_ratio`), with
    the paired bootstrap CI (``kl_vs_ours``, ``kl_vs_ours_lo``/``_hi``; positive: the part helps).
    Rows whose ratio lies outside that series' measured range get ``None`` there.
    """
    out = []
    cells = series_cells(store, profile, model, corpus)
    for name in peer_series:
        for r in cells[name].rows if name in cells else []:
            if r["plan"].endswith(peer_point):
                out.append({"side": "peer + part", **r})
    ours_cell = _with_results(store, cells[ours_series]) if ours_series in cells else None
    ours = recipe_point(ours_cell.rows, recipe) if ours_cell else None
    if ours is not None:
        out.append({"side": "ours", **ours, "plan": recipe})
    gain = store.largest(profile, "e2e/head_to_head", model, corpus, label_prefix=f"{table}-")
    if gain is None:
        return out
    gain = _with_results(store, gain)
    for r, res in zip(gain.rows, gain.results["results"]):
        row: dict[str, Any] = {"side": "ours − part", **r, "kl_vs_ours": None, "kl_vs_ours_lo": None,
                               "kl_vs_ours_hi": None}
        ref = at_ratio(ours_cell.rows, ours_cell.results["results"], float(r["ratio_vs_bf16"])) if ours_cell else None
        if ref is not None:
            d = paired_difference(res, ref, "kl_mean", passage_ids=(gain.results.get("passage_ids"),
                                                                    ours_cell.results.get("passage_ids")))
            row.update(kl_vs_ours=d.mean, kl_vs_ours_lo=d.lo, kl_vs_ours_hi=d.hi)
        out.append(row)
    return out


def tuning_rows(store: Store, profile: str) -> list[dict[str, Any]]:
    """Rows of every tuning cell with the cell's model/corpus and split (calib)."""
    out = []
    for c in store.cells(profile, "e2e/tuning"):
        out += [{"model": c.cell.model, "corpus": c.cell.corpus, "split": c.cell.params.get("split"),
                 "selected": ", ".join(f"KL<={t:g}" for t in r.get("selected_for_kl", [])), **r} for r in c.rows]
    return out


def recipe_point(rows: Sequence[Mapping[str, Any]], recipe: str) -> Mapping[str, Any] | None:
    """The row of ``rows`` that is exactly the named recipe (same K/V specs and exact tokens)."""
    from ..llm import recipes  # noqa: PLC0415
    from ..llm.plan import template_spec  # noqa: PLC0415

    plan = recipes.load(recipe).plan()
    want = (template_spec(plan.k), template_spec(plan.v or plan.k), plan.protect_tokens, plan.hot_tokens)
    for r in rows:
        got = (template_spec(r["k_codec"]), template_spec(r["v_codec"]), r.get("protect_tokens", 0),
               r.get("hot_tokens", 0))
        if got == want:
            return r
    return None


def exact_tokens_text(row: Mapping[str, Any]) -> str:
    """``"sink 1"``, ``"sink 4 + recent 128"`` or ``"none"`` for a row."""
    sink, recent = int(row.get("protect_tokens") or 0), int(row.get("hot_tokens") or 0)
    parts = ([f"sink {sink}"] if sink else []) + ([f"recent {recent}"] if recent else [])
    return " + ".join(parts) or "none"
