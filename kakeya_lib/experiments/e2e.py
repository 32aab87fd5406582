"""End-to-end analyses as store cells (the ``exp-e2e`` notebook and ``kakeya sweep``).

A :class:`Task` is one cell of work: which analysis, its plans, and the :class:`~..store.Cell`
(profile, model, corpus, parameters) its rows are stored under. The task constructors
(:func:`head_to_head`, :func:`ablation`, :func:`frontier`, :func:`depth`, :func:`long_context`)
are the only place those parameters are assembled, so a notebook, a local sweep and a sweep on a
cluster name the same cell the same way and find each other's results.

A :class:`Session` holds one model + corpus and loads the model only when a cell actually has
to be computed, so a notebook whose results are all in the store runs in seconds;
:func:`run_task` reads a cell from the store or computes it with a session. Plans run side by
side on the same passages (:func:`evaluate_rows`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ..codecs.spec import split_pair
from ..llm.plan import KVPlan
from ..store import Cell, CellResult, Store
from .analyses import OURS_K, OURS_V
from .sweeps import ablation_ladder, depth_compounding
from .table import summary_row

LabelledPlans = list[tuple[dict[str, Any], KVPlan]]

# The strongest baselines at comparable budgets ("K|V" when they differ): rotated int4 (llama.cpp's
# Hadamard q4 family), TurboQuant at 4 and 3 bits, KIVI-4.
BASELINE_PAIRS = ["int:bits=4,rotate=1", "turboquant:bits=4", "turboquant:bits=3", "kivi:bits=4|kivi:bits=4,mode=value"]
LONG_CONTEXT_PAIRS = ["turboquant:bits=4"]


def comparison_plans(pairs: Sequence[str] = (), recipes: Sequence[str] = ()) -> LabelledPlans:
    """Plans for ``"K_SPEC|V_SPEC"`` (or one spec for both) pairs and named recipes, in that order."""
    from ..llm import recipes as recipe_lib  # noqa: PLC0415

    out: LabelledPlans = []
    for text in pairs:
        k, v = split_pair(text)
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


@dataclasses.dataclass(frozen=True)
class Size:
    """How much text a cell evaluates: passages of ``ctx`` + ``n_eval`` tokens, and calibration."""

    ctx: int
    n_eval: int
    n_passages: int
    seed: int = 0
    calib_passages: int = 8

    def params(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @property
    def label(self) -> str:
        return f"ctx{self.ctx}-n{self.n_passages}"


ANALYSES = ("head_to_head", "ablation", "frontier", "depth", "long_context")


@dataclasses.dataclass(frozen=True)
class Task:
    """One cell of end-to-end work (picklable: it travels to sweep workers).

    ``args`` holds what builds the plans (pairs, recipes, steps, depths); ``cell.params`` holds
    what identifies the result (sizes and the plans' labels).
    """

    kind: str
    cell: Cell
    size: Size
    args: Mapping[str, Any]
    k_metric: bool = False

    def plans(self, session: "Session | None" = None) -> LabelledPlans:
        if self.kind in ("head_to_head", "long_context"):
            return comparison_plans(self.args["pairs"], self.args["recipes"])
        if self.kind == "ablation":
            return ablation_plans(self.args.get("block"))
        if self.kind == "frontier":
            return frontier_plans(self.args["steps"])
        if self.kind == "depth":
            if session is None:
                raise ValueError("depth plans need the model's config (a session)")
            return depth_plans(session.config, [d for d in self.args["depths"] if d <= len(session.layers())])
        raise ValueError(f"unknown analysis {self.kind!r}; one of {ANALYSES}")

    def compute(self, session: "Session") -> tuple[list[dict[str, Any]], dict[str, Any]]:
        s = self.size
        return session.run(self.plans(session), s.ctx, s.n_eval, s.n_passages, s.calib_passages, k_metric=self.k_metric)


def _cell(profile: str, model: str, corpus: str, kind: str, size: Size, **extra: Any) -> Cell:
    return Cell(profile, model, corpus, f"e2e/{kind}", size.label, {**size.params(), **extra})


def _labels(plans: LabelledPlans) -> list[str]:
    return [p.label for _, p in plans]


def head_to_head(profile: str, model: str, corpus: str, size: Size, pairs: Sequence[str], recipes: Sequence[str],
                 k_metric: bool = False) -> Task:
    """Baselines (``"K|V"`` spec pairs) and recipes side by side."""
    args = {"pairs": list(pairs), "recipes": list(recipes)}
    labels = _labels(comparison_plans(pairs, recipes))
    return Task("head_to_head", _cell(profile, model, corpus, "head_to_head", size, k_metric=k_metric, plans=labels),
                size, args, k_metric)


def ablation(profile: str, model: str, corpus: str, size: Size) -> Task:
    """The stage-by-stage ladder."""
    labels = _labels(ablation_plans())
    return Task("ablation", _cell(profile, model, corpus, "ablation", size, plans=labels), size, {})


def frontier(profile: str, model: str, corpus: str, size: Size, steps: Sequence[float]) -> Task:
    """Our recipe at several grid steps."""
    labels = _labels(frontier_plans(steps))
    return Task("frontier", _cell(profile, model, corpus, "frontier", size, plans=labels), size, {"steps": list(steps)})


def depth(profile: str, model: str, corpus: str, size: Size, depths: Sequence[int]) -> Task:
    """Our recipe on the first k layers, for each k in ``depths`` (clipped to the model)."""
    return Task("depth", _cell(profile, model, corpus, "depth", size, depths=list(depths)), size,
                {"depths": list(depths)})


def long_context(profile: str, model: str, corpus: str, size: Size, pairs: Sequence[str], recipes: Sequence[str]
                 ) -> Task:
    """The same plans at a longer prefix (``size`` carries the long ``ctx`` and its passage count)."""
    args = {"pairs": list(pairs), "recipes": list(recipes)}
    labels = _labels(comparison_plans(pairs, recipes))
    return Task("long_context", _cell(profile, model, corpus, "long_context", size, plans=labels), size, args)


def run_task(store: Store, task: Task, session: "Session", force: bool = False) -> CellResult:
    """The task's rows from the store, or computed with ``session`` and stored (atomically)."""
    if (session.model_name, session.corpus) != (task.cell.model, task.cell.corpus):
        raise ValueError(f"session is {session.model_name}/{session.corpus}, task wants {task.cell.model}/{task.cell.corpus}")
    return store.run(task.cell, lambda: task.compute(session), force=force, provenance_extra=session.provenance())


class _ByteTokenizer:
    """Bytes modulo the vocabulary: real text for tiny random models (tests and sweep smoke runs)."""

    eos_token_id = 0
    bos_token_id = 1

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def __call__(self, text: str, add_special_tokens: bool = False, **_: Any) -> list[int]:
        return [2 + b % (self.vocab - 2) for b in text.encode()]


@dataclasses.dataclass
class Session:
    """A model and corpus, loaded lazily; passages and query metrics cached per size.

    ``model_name`` is anything :func:`~kakeya_lib.llm.models.load_model` takes, or
    ``tiny-<family>`` (a seeded random 2-layer model read through a byte tokenizer; tests).
    """

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
            if self.model_name.startswith("tiny-"):
                family = self.model_name[len("tiny-"):]
                model = models.tiny_model(family, seed=self.seed)
                self._loaded = models.LoadedModel(name=self.model_name, model=model,
                                                  tokenizer=_ByteTokenizer(model.config.vocab_size), family=family,
                                                  needs_bos=False)
            else:
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
