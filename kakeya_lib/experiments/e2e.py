"""End-to-end analyses as store cells (the ``exp-e2e`` notebook, and later sweeps).

A :class:`Session` holds one model + corpus and loads the model only when a cell actually has
to be computed, so a notebook whose results are all in the store runs in seconds. Each
``*_plans`` function turns notebook parameters into labelled plans; :func:`evaluate_rows` runs
them side by side on the same passages and returns tidy rows plus the full results.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ..llm.plan import KVPlan
from .analyses import OURS_K, OURS_V
from .sweeps import ablation_ladder, depth_compounding
from .table import summary_row

LabelledPlans = list[tuple[dict[str, Any], KVPlan]]

# The strongest baselines at comparable budgets ("K|V" when they differ): rotated int4 (llama.cpp's
# Hadamard q4 family), TurboQuant at 4 and 3 bits, KIVI-4.
BASELINE_PAIRS = ["int:bits=4,rotate=1", "turboquant:bits=4", "turboquant:bits=3", "kivi:bits=4|kivi:bits=4,mode=value"]
LONG_CONTEXT_PAIRS = ["turboquant:bits=4"]


def _split_pair(text: str) -> tuple[str, str | None]:
    k, sep, v = text.partition("|")
    return k.strip(), (v.strip() if sep else None)


def comparison_plans(pairs: Sequence[str] = (), recipes: Sequence[str] = ()) -> LabelledPlans:
    """Plans for ``"K_SPEC|V_SPEC"`` (or one spec for both) pairs and named recipes, in that order."""
    from ..llm import recipes as recipe_lib  # noqa: PLC0415

    out: LabelledPlans = []
    for text in pairs:
        k, v = _split_pair(text)
        out.append(({"family": "baseline" if not k.startswith("kakeya") else "kakeya", "source": text}, KVPlan(k, v)))
    for name in recipes:
        recipe = recipe_lib.load(name)
        out.append(({"family": recipe.family, "source": name}, recipe.plan()))
    return out


def frontier_plans(steps: Sequence[float], k_base: str = OURS_K, v_base: str = OURS_V) -> LabelledPlans:
    """Our recipe with the uniform grid step swept (the step sets the rate), sink token exact."""
    out: LabelledPlans = []
    for step in steps:
        k = k_base.replace("step=0.55", f"step={step}")
        v = v_base.replace("step=0.7", f"step={step}")
        out.append(({"step": step, "family": "ours", "source": "frontier"},
                    KVPlan(k, v, protect_tokens=1, name=f"ours step {step}")))
    return out


def ablation_plans(block: int | None = None) -> LabelledPlans:
    """The stage-by-stage ladder (seed stages, then ours); see :func:`.sweeps.ablation_ladder`."""
    return ablation_ladder(block=block)


def depth_plans(config: Any, depths: Sequence[int] | None = None, k: str = OURS_K, v: str = OURS_V) -> LabelledPlans:
    """Our recipe on the first ``depth`` compressible layers only, sink token exact."""
    plans = depth_compounding(config, k, v, depths)
    return [(cols, dataclasses.replace(plan, protect_tokens=1)) for cols, plan in plans]


def evaluate_rows(model: Any, passages: Sequence[Sequence[int]], ctx: int, labelled: LabelledPlans, **kwargs: Any
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate the plans side by side; (tidy rows, full results) in plan order."""
    from ..llm.evaluate import evaluate_many  # noqa: PLC0415  (torch only when computing)

    results = evaluate_many(model, passages, ctx, [plan for _, plan in labelled], **kwargs)
    rows = []
    for (cols, _), res in zip(labelled, results):
        rows.append({**cols, **summary_row(res), "ctx": ctx, "codec_seconds": res.get("codec_seconds"),
                     "compressed_layers": len(res.get("compressed_layers") or [])})
    return rows, results


@dataclasses.dataclass
class Session:
    """A model and corpus, loaded lazily; passages and query metrics cached per size."""

    model_name: str
    corpus: str = "sotu"
    seed: int = 0
    progress: bool = False
    _loaded: Any = dataclasses.field(default=None, repr=False)
    _passages: dict[tuple[int, int, int], Any] = dataclasses.field(default_factory=dict, repr=False)
    _metrics: dict[tuple[int, int], Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            import warnings  # noqa: PLC0415

            from ..llm import models  # noqa: PLC0415

            # transformers' weight-loading bar imports tqdm.auto, which warns inside notebooks without
            # ipywidgets; the bar is disabled (TQDM_DISABLE) and the warning says nothing about results.
            warnings.filterwarnings("ignore", message="IProgress not found")
            self._loaded = models.load_model(self.model_name)
        return self._loaded

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def config(self) -> Any:
        return self.loaded.model.config

    def passages(self, ctx: int, n_eval: int, n: int) -> list[Any]:
        """``n`` eval-split passages of ``ctx + n_eval`` tokens (seeded, cached)."""
        key = (ctx, n_eval, n)
        if key not in self._passages:
            from ..llm import corpora  # noqa: PLC0415

            self._passages[key] = corpora.passages(self.corpus, self.loaded.tokenizer, ctx, n_eval, n, self.seed,
                                                   split="eval", bos=self.loaded.needs_bos)
        return self._passages[key]

    def k_metric(self, ctx: int, calib_passages: int) -> Any:
        """The RoPE-averaged Σ_q calibrated on the calib split: one query metric for every plan."""
        key = (ctx, calib_passages)
        if key not in self._metrics:
            from ..llm import qprecond  # noqa: PLC0415

            self._metrics[key] = qprecond.calibrate_on_corpus(
                self.model, self.loaded.tokenizer, self.corpus, ctx, n_passages=calib_passages, seed=0,
                bos=self.loaded.needs_bos, variant="rope", model_name=self.model_name)
        return self._metrics[key]

    def layers(self) -> list[int]:
        """The compressible (full-attention) layers."""
        from ..llm.plan import full_attention_layers  # noqa: PLC0415

        return full_attention_layers(self.config)

    def rope_frequencies(self) -> dict[int, Any]:
        """Each compressible layer's RoPE frequency table [D/2]."""
        from ..llm.qprecond import rope_frequencies  # noqa: PLC0415

        return {layer: rope_frequencies(self.model, layer) for layer in self.layers()}

    def capture_kv(self, ctx: int, n: int) -> list[dict[str, Any]]:
        """Pre-RoPE K and V ([n_kv, T, D] float32 numpy) of every layer for ``n`` passages of ``ctx`` tokens."""
        from ..llm.capture import capture_passage  # noqa: PLC0415

        out = []
        for passage in self.passages(ctx, 0, n):
            tensors = capture_passage(self.model, passage.prefix_ids)
            out.append({k: t.numpy() for k, t in tensors.items() if not k.endswith(".q")})
        return out

    def calibration_kwargs(self, calib_passages: int) -> dict[str, Any]:
        """What plans with Σ_q or calibrated codebooks need to calibrate (on the calib split)."""
        return {"corpus": self.corpus, "tokenizer": self.loaded.tokenizer, "calib_passages": calib_passages,
                "calib_seed": 0, "bos": self.loaded.needs_bos}

    def run(self, labelled: LabelledPlans, ctx: int, n_eval: int, n_passages: int, calib_passages: int = 8,
            k_metric: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Evaluate plans on this session's passages: (rows, {"results", "passage_ids"})."""
        chosen = self.passages(ctx, n_eval, n_passages)
        metric = self.k_metric(ctx, calib_passages) if k_metric else None
        rows, results = evaluate_rows(self.model, [p.input_ids for p in chosen], ctx, labelled, progress=self.progress,
                                      seed=self.seed, k_metric=metric, **self.calibration_kwargs(calib_passages))
        return rows, {"results": results, "passage_ids": [p.passage_id for p in chosen]}

    def provenance(self, **extra: Any) -> Mapping[str, Any]:
        """Fields for the store's provenance sidecar."""
        return {"device": "cpu (torch)", "seed": self.seed, "model": self.model_name, "corpus": self.corpus, **extra}
