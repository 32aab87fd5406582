"""The exp-mse analyses as store cells: what the notebook runs and what ``kakeya sweep`` can run.

Two cells per (model, corpus, context): ``mse/layers`` codes the captured pre-RoPE K and V of
``n_passages`` passages with every configuration (:func:`.mse_tables.layer_rows`), and
``mse/ctx_scaling`` re-codes growing prefixes of the first passage (:func:`.mse_tables.ctx_scaling`).
The task constructors here build the same :class:`~..store.Cell` the notebook names, so a notebook
run and a sweep find each other's results.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import InputError
from ..store import Cell
from . import mse_tables

if TYPE_CHECKING:
    from .e2e import Session

# exp-mse's defaults: the configurations of the ratio-against-context table
SCALING_CONFIGS = ("tier-1 (bugs fixed)", "ours-5x", "TurboQuant-3")


@dataclasses.dataclass(frozen=True)
class MseTask:
    """One exp-mse cell (picklable: it travels to sweep workers)."""

    kind: str  # "mse_layers" or "mse_ctx_scaling"
    cell: Cell
    ctx: int
    n_passages: int
    seed: int
    configs: Mapping[str, tuple[str, str]]
    extra: Mapping[str, Any]  # rope_configs (layers) or lengths (scaling)

    def compute(self, session: "Session") -> list[dict[str, Any]]:
        if self.kind == "mse_layers":
            captured = session.capture_kv(self.ctx, self.n_passages)
            return mse_tables.layer_rows(captured, session.layers(), self.configs, session.rope_frequencies(),
                                         self.extra["rope_configs"])
        first = session.capture_kv(self.ctx, 1)[0]  # passage 0 is the same one the layers cell starts with
        return mse_tables.ctx_scaling(first, session.layers(), self.configs, self.extra["lengths"])

    def provenance(self, session: "Session") -> Mapping[str, Any]:
        return session.provenance(ctx=self.ctx)


def layers_task(profile: str, model: str, corpus: str, ctx: int, n_passages: int, seed: int = 0,
                configs: Mapping[str, str] | None = None, rope_configs: Sequence[str] | None = None) -> MseTask:
    """The ``mse/layers`` cell: every configuration on ``n_passages`` captured passages of ``ctx`` tokens.

    ``configs`` maps names to ``"K|V"`` specs, one spec or ``recipe:NAME`` (default: the seed's
    MSE-table configurations); ``rope_configs`` names those whose keys are also coded post-RoPE.
    """
    specs = mse_tables.resolve_configs(configs or mse_tables.SEED_TABLE_CONFIGS)
    rope_names = list(rope_configs or mse_tables.ROPE_CONFIGS)
    cell = Cell(profile, model, corpus, "mse/layers", f"ctx{ctx}-n{n_passages}",
                {"ctx": ctx, "n_passages": n_passages, "seed": seed, "configs": specs, "rope_configs": rope_names})
    return MseTask("mse_layers", cell, ctx, n_passages, seed, specs, {"rope_configs": rope_names})


def ctx_scaling_task(profile: str, model: str, corpus: str, ctx: int, lengths: Sequence[int], seed: int = 0,
                     configs: Mapping[str, str] | None = None, names: Sequence[str] = SCALING_CONFIGS) -> MseTask:
    """The ``mse/ctx_scaling`` cell: the whole-cache ratio of ``names`` at each prefix length."""
    specs = mse_tables.resolve_configs(configs or mse_tables.SEED_TABLE_CONFIGS)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise InputError(f"scaling configs {unknown} are not among the configurations {sorted(specs)}")
    if not lengths or any(not isinstance(t, int) or not 1 <= t <= ctx for t in lengths):
        raise InputError(f"ctx_lengths must be integers in 1..ctx={ctx}, got {list(lengths)}")
    chosen = {n: specs[n] for n in names}
    cell = Cell(profile, model, corpus, "mse/ctx_scaling", f"ctx{ctx}",
                {"ctx": ctx, "seed": seed, "lengths": list(lengths), "configs": chosen})
    return MseTask("mse_ctx_scaling", cell, ctx, 1, seed, chosen, {"lengths": list(lengths)})
