"""The seed's published claims beside our measurements (the ``render-claims`` notebook).

``data/reference/seed_claims.yaml`` lists each claim with its value, setup and source, and
names the stored result that is our comparable measurement (``ours``: a table, a config or
plan, a field). :func:`compare` looks each one up in the results store, so the paper's claims
table is regenerated from results like every other table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

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
        setup = f"{model}, {layers.cell.params['n_passages']} x {layers.cell.params['ctx']} tokens, real bytes"
        out["mse_summary"] = (mse_tables.config_summary(layers.rows, ref), setup)
        out["rope"] = (mse_tables.rope_effect(layers.rows), setup)
    scaling = store.largest(profile, "mse/ctx_scaling", model, corpus)
    if scaling is not None:
        out["ctx_scaling"] = (scaling.rows, f"{model}, measured at each length")
    head = store.largest(profile, "e2e/head_to_head", model, corpus)
    if head is not None:
        p = head.cell.params
        out["head_to_head"] = (head.rows, f"{model}, ctx {p['ctx']}, {p['n_passages']} passages")
    return out


def compare(claims: Sequence[Mapping[str, Any]], tables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per claim: the seed's value and setup, ours and our setup (None where not measured)."""
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
                value = hit.get(spec["field"])
                if spec.get("at") == "longest":
                    setup = f"{setup}, ctx {hit.get('ctx')}"
        rows.append({"id": c["id"], "claim": c["claim"], "unit": c["unit"], "seed_value": c["seed_value"],
                     "seed_setup": c["seed_setup"], "source": c["source"], "ours_value": value, "ours_setup": setup,
                     "note": c.get("note") or ""})
    return rows
