"""The seed's published claims beside our measurements (the ``render-claims`` notebook).

``data/reference/seed_claims.yaml`` lists each claim with its value, setup and source, and
names the stored result that is our comparable measurement (``ours``: a table, a config or
plan, a field). :func:`compare` looks each one up in the results store, so the paper's claims
table is regenerated from results like every other table.

A claim that is a ratio of two configurations (the seed's MSE inflation: a config's error over
the b=3 exact reference's) gives ``ours.divide_by``: the reference's base spec and the codec
keys the reference must share with the numerator (``keep``). The seed ran both sides of such a
ratio with the same K settings (paper v7: K with ``metric=inner_product`` and its norm-dropping
decode, spec §7.6, §1.9), so dividing our bugged numerator by a bug-free reference would
compare different things; where no stored row matches, the claim is "not measured" (value
None, and our setup names the spec that would measure it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import codecs
from ..errors import InputError
from ..paths import DATA_DIR
from ..store import Store
from . import mse_tables

CLAIMS_FILE = DATA_DIR / "reference" / "seed_claims.yaml"
_REQUIRED = ("id", "claim", "seed_value", "unit", "seed_setup", "source", "ours")


def load_claims(path: Path = CLAIMS_FILE) -> list[dict[str, Any]]:
    """The claims file, validated (every entry has the required keys and a numeric seed value)."""
    import yaml  # noqa: PLC0415

    data = yaml.safe_load(Path(path).read_text())
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list) or not claims:
        raise InputError(f"{path}: expected a non-empty 'claims' list")
    for c in claims:
        missing = [k for k in _REQUIRED if k not in c]
        if missing or not isinstance(c["seed_value"], (int, float)) or not isinstance(c["ours"], dict):
            raise InputError(f"{path}: claim {c.get('id')!r} is missing {missing} or has a bad value")
    return claims


def measured_tables(store: Store, profile: str, model: str, corpus: str) -> dict[str, Any]:
    """Our tables a claim can point at: mse_summary, rope, ctx_scaling rows and head_to_head rows,
    with the setup each was measured on."""
    out: dict[str, Any] = {}
    layers = store.largest(profile, "mse/layers", model, corpus)
    if layers is not None:
        ref = next(iter(layers.cell.params["configs"]))
        setup = f"{model}, {corpus}, {layers.cell.params['n_passages']} x {layers.cell.params['ctx']} tokens, real bytes"
        out["mse_summary"] = (mse_tables.config_summary(layers.rows, ref), setup)
        out["rope"] = (mse_tables.rope_effect(layers.rows), setup)
    scaling = store.largest(profile, "mse/ctx_scaling", model, corpus)
    if scaling is not None:
        out["ctx_scaling"] = (scaling.rows, f"{model}, {corpus}, measured at each length")
    head = store.largest(profile, "e2e/head_to_head", model, corpus, label_prefix="ctx")  # not a named table
    if head is not None:
        p = head.cell.params
        out["head_to_head"] = (head.rows, f"{model}, {corpus}, ctx {p['ctx']}, {p['n_passages']} passages")
    return out


def reference_spec(numerator_spec: str, base: str, keep: Sequence[str]) -> str:
    """Canonical spec of ``base`` with the ``keep`` keys taken from ``numerator_spec``.

    E.g. the seed's tier-1 K (``metric=ip,legacy_ip_norm=1``) against base ``kakeya:bits=3``
    gives ``kakeya:legacy_ip_norm=1,metric=ip``: b=3 exact PCA, decoded the way the seed
    decoded its keys.
    """
    num = codecs.get(numerator_spec)
    ref = codecs.get(base)
    if type(num) is not type(ref):
        raise InputError(f"reference {base!r} and numerator {numerator_spec!r} are different codecs")
    params = dataclasses.replace(ref.params, **{k: getattr(num.params, k) for k in keep})
    return type(ref)(params).spec


def _ratio_to_reference(hit: Mapping[str, Any], table: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]
                        ) -> tuple[float | None, str | None]:
    """``hit[field]`` over the same field of the row whose stream spec is the matching reference;
    (None, what is missing) when the table holds no such row."""
    div = spec["divide_by"]
    key = f"{div['stream']}_spec"
    want = reference_spec(hit[key], div["spec"], div.get("keep", ()))
    ref = next((r for r in table if r.get(key) == want), None)
    if ref is None or not ref.get(spec["field"]) or hit.get(spec["field"]) is None:
        return None, f"no stored reference with {div['stream'].upper()} = {want}"
    return hit[spec["field"]] / ref[spec["field"]], None


def compare(claims: Sequence[Mapping[str, Any]], tables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per claim: the seed's value and setup, ours and our setup (None where not measured).

    A claim with ``ours.divide_by`` is the ratio of the named row's ``field`` to the reference
    row's (see :func:`reference_spec`); without a matching reference its value is None and its
    setup says which reference is missing.
    """
    rows = []
    for c in claims:
        spec = c["ours"]
        value, setup = None, None
        if spec["table"] in tables:
            table, setup = tables[spec["table"]]
            key = "plan" if "plan" in spec else "config"
            hits = [r for r in table if r.get(key) == spec.get(key)]
            if hits:
                hit = hits[-1] if spec.get("at") == "longest" else hits[0]
                if "divide_by" in spec:
                    value, missing = _ratio_to_reference(hit, table, spec)
                    setup = f"{setup}; {missing}" if missing else setup
                else:
                    value = hit.get(spec["field"])
                if spec.get("at") == "longest":
                    setup = f"{setup}, ctx {hit.get('ctx')}"
        rows.append({"id": c["id"], "claim": c["claim"], "unit": c["unit"], "seed_value": c["seed_value"],
                     "seed_setup": c["seed_setup"], "source": c["source"], "ours_value": value, "ours_setup": setup,
                     "note": c.get("note") or ""})
    return rows
