"""End-to-end analyses as store cells (the ``exp-e2e`` notebook and ``kakeya sweep``).

A :class:`Task` is one cell of work: which analysis, its plans, and the :class:`~..store.Cell`
(profile, model, corpus, parameters) its rows are stored under. The task constructors
(:func:`head_to_head`, :func:`frontier`, :func:`tuning`, :func:`ablation`, :func:`depth`,
:func:`long_context`) are the only place those parameters are assembled, so a notebook, a local
sweep and a sweep on a cluster name the same cell the same way and find each other's results.

Rows of a comparison are *entries* (:func:`entry_plans`): a recipe name, a ``"K_SPEC|V_SPEC"``
pair, or a mapping ``{name, family, recipe | k [, v], protect_tokens, hot_tokens, boundary}``
(a recipe with overrides, or specs with their exact tokens; ``keys`` / ``k_keys`` / ``v_keys`` set
spec keys on both streams / K / V), so every codec can be given the same
exact tokens and every row says which it had. A frontier *series* is one entry plus the points
it is swept over (:func:`series_plans`); each series is a cell of its own.

Tuning (:func:`tuning`) runs only on passages of the corpus's ``calib`` split and picks, by a
stated rule (:func:`select_by_kl`), the parameters our recipes ship with; evaluation passages
never choose anything.

A :class:`Session` holds one model + corpus and loads the model only when a cell actually has
to be computed, so a notebook whose results are all in the store runs in seconds;
:func:`run_task` reads a cell from the store or computes it with a session. Plans run side by
side on the same passages (:func:`evaluate_rows`).

One concept (over 400 lines): end-to-end analyses as store cells (tasks, their plans, the session that runs them).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any, Mapping, Sequence

from .. import codecs
from ..codecs.spec import split_pair
from ..errors import InputError
from ..llm import recipes as recipe_lib
from ..llm import whitening
from ..llm.plan import KVPlan
from ..store import Cell, CellResult, Store
from .plans import ablation_ladder, depth_compounding
from .table import summary_row

LabelledPlans = list[tuple[dict[str, Any], KVPlan]]

# The recipe the frontier-free analyses (depth, long context) are run with.
HEADLINE_RECIPE = "ours-5x"
# The rule that picks a tuned recipe: the largest ratio whose KL on the tuning passages is <= target.
TUNING_RULE = "largest ratio_vs_bf16 with kl_mean <= target on calib-split passages"

# The strongest baselines at comparable budgets ("K|V" when they differ).
BASELINE_PAIRS = ["int:bits=4,rotate=1", "turboquant:bits=4", "turboquant:bits=3", "kivi:bits=4|kivi:bits=4,mode=value"]
LONG_CONTEXT_PAIRS = ["turboquant:bits=4"]
_ENTRY_KEYS = {"name", "family", "recipe", "k", "v", "keys", "k_keys", "v_keys", "protect_tokens", "hot_tokens",
               "boundary", "layer_steps", "saliency_queries"}


def entry_plans(entries: Sequence[Any]) -> LabelledPlans:
    """Labelled plans for comparison entries (see the module docstring), in order."""
    out: LabelledPlans = []
    for entry in entries:
        if isinstance(entry, str) and (":" in entry or "|" in entry or entry in codecs.names()):
            k, v = split_pair(entry)
            family = "kakeya" if k.startswith("kakeya") else "baseline"
            out.append(({"family": family, "source": entry}, KVPlan(k, v)))
        elif isinstance(entry, str):
            recipe = recipe_lib.load(entry)
            out.append(({"family": recipe.family, "source": entry}, recipe.plan()))
        elif isinstance(entry, Mapping):
            out.append(_mapping_plan(entry))
        else:
            raise InputError(f"a comparison entry is a recipe name, a 'K|V' pair or a mapping, got {entry!r}")
    return out


def _mapping_plan(entry: Mapping[str, Any]) -> tuple[dict[str, Any], KVPlan]:
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise InputError(f"entry {dict(entry)!r}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    if not entry.get("name"):
        raise InputError(f"entry {dict(entry)!r} needs a 'name' (the row label)")
    if ("recipe" in entry) == ("k" in entry):
        raise InputError(f"entry {entry['name']!r}: give either 'recipe' or 'k' (with an optional 'v')")
    overrides = {key: int(entry[key]) for key in ("protect_tokens", "hot_tokens", "boundary", "saliency_queries")
                 if key in entry}
    if "recipe" in entry:
        recipe = recipe_lib.load(str(entry["recipe"]))
        plan = dataclasses.replace(recipe.plan(), name=str(entry["name"]), **overrides)
        family, source = recipe.family, str(entry["recipe"])
    else:
        plan = KVPlan(str(entry["k"]), entry.get("v"), name=str(entry["name"]), **overrides)
        family, source = "baseline", str(entry["k"]) + (f"|{entry['v']}" if entry.get("v") else "")
    if "layer_steps" in entry:
        plan = dataclasses.replace(plan, layer_steps=entry["layer_steps"])
    keys = dict(entry.get("keys") or {})
    if keys or entry.get("k_keys") or entry.get("v_keys"):
        k = codecs.with_keys(plan.k, **keys, **dict(entry.get("k_keys") or {}))
        v = codecs.with_keys(plan.v or plan.k, **keys, **dict(entry.get("v_keys") or {}))
        plan = dataclasses.replace(plan, k=k, v=v)
    return {"family": str(entry.get("family", family)), "source": source}, plan


def series_plans(name: str, base: Any, points: Sequence[Mapping[str, Any]]) -> LabelledPlans:
    """One frontier series: ``base`` (an entry) at each point.

    A point maps spec keys to values, set on both the K and V specs (``{bits: 3}``), or holds
    ``k:`` / ``v:`` mappings for one stream only (``{k: {step: 0.5}, v: {step: 0.7}}``).
    """
    if not points:
        raise InputError(f"series {name!r} has no points")
    (cols, plan), = entry_plans([base])
    out: LabelledPlans = []
    for point in points:
        both = {key: val for key, val in point.items() if key not in ("k", "v")}
        k = codecs.with_keys(plan.k, **both, **(point.get("k") or {}))
        v = codecs.with_keys(plan.v or plan.k, **both, **(point.get("v") or {}))
        label = f"{name} " + _point_label(point)
        out.append(({**cols, "series": name, "point": dict(point)},
                    dataclasses.replace(plan, k=k, v=v, name=label)))
    return out


def _point_label(point: Mapping[str, Any]) -> str:
    if not point:
        return "(as given)"  # the base entry itself, e.g. a tuned recipe on its own frontier
    parts = []
    for key, val in point.items():
        if isinstance(val, Mapping):
            parts += [f"{key.upper()} {k2}={v2}" for k2, v2 in val.items()]
        else:
            parts.append(f"{key}={val}")
    return ", ".join(parts)


def tuning_plans(k_steps: Sequence[float], v_steps: Sequence[float], recipe: str = HEADLINE_RECIPE,
                 base: Mapping[str, Any] | None = None) -> LabelledPlans:
    """A structure at every (K step, V step) on the grid, with its exact tokens.

    The structure is ``recipe``'s (ours-5x: block mean without a basis, k-means on K, Hadamard,
    entropy-coded uniform grid, 8-bit row scalars, 3072-row blocks, the sink token), or a
    comparison entry ``base`` (e.g. the ``klt`` transform coder); only the ``step`` keys vary.
    """
    if base is None:
        plan, prefix, family = recipe_lib.load(recipe).plan(), "ours", "ours"
    else:
        ((cols, plan),) = entry_plans([base])
        prefix, family = str(base["name"]), cols.get("family", "ours")
    out: LabelledPlans = []
    for ks, vs in itertools.product(k_steps, v_steps):
        k = codecs.with_keys(plan.k, step=ks)
        v = codecs.with_keys(plan.v or plan.k, step=vs)
        out.append(({"k_step": ks, "v_step": vs, "family": family, "source": "tuning"},
                    dataclasses.replace(plan, k=k, v=v, name=f"{prefix} K step {ks}, V step {vs}")))
    return out


def select_by_kl(rows: Sequence[Mapping[str, Any]], target: float) -> Mapping[str, Any] | None:
    """The tuning rule (:data:`TUNING_RULE`): the row of largest ratio whose ``kl_mean`` <= target."""
    ok = [r for r in rows if r["kl_mean"] is not None and r["kl_mean"] <= target]
    return max(ok, key=lambda r: r["ratio_vs_bf16"]) if ok else None


def ablation_plans(block: int | None = None) -> LabelledPlans:
    """The stage-by-stage ladder (seed stages, then ours); see :func:`.plans.ablation_ladder`."""
    return ablation_ladder(block=block)


def depth_plans(config: Any, depths: Sequence[int] | None = None, recipe: str = HEADLINE_RECIPE) -> LabelledPlans:
    """Our recipe on the first ``depth`` compressible layers only, with its exact tokens."""
    base = recipe_lib.load(recipe).plan()
    plans = depth_compounding(config, base.k, base.v, depths)
    return [(cols, dataclasses.replace(plan, protect_tokens=base.protect_tokens)) for cols, plan in plans]


def evaluate_rows(model: Any, passages: Sequence[Sequence[int]], ctx: int, labelled: LabelledPlans, **kwargs: Any
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate the plans side by side; (tidy rows, full results) in plan order."""
    from ..llm.evaluate import evaluate_many  # noqa: PLC0415  (torch only when computing)

    results = evaluate_many(model, passages, ctx, [plan for _, plan in labelled], **kwargs)
    rows = []
    for (cols, _), res in zip(labelled, results):
        rows.append({**cols, **summary_row(res), "ctx": ctx, "codec_seconds": res.get("codec_seconds"),
                     "compressed_layers": len(res.get("compressed_layers") or []),
                     "kvtc_artifact_bytes": (res.get("kvtc") or {}).get("artifact_bytes")})
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


ANALYSES = ("head_to_head", "frontier", "tuning", "ablation", "depth", "long_context")
# Tuning passages: the calib split, with a seed of their own (calibration windows use seed 0).
TUNING_SEED = 1


@dataclasses.dataclass(frozen=True)
class Task:
    """One cell of end-to-end work (picklable: it travels to sweep workers).

    ``args`` holds what builds the plans (entries, series points, steps, depths); ``cell.params``
    holds what identifies the result (sizes and the plans' labels).
    """

    kind: str
    cell: Cell
    size: Size
    args: Mapping[str, Any]
    k_metric: bool = False

    @property
    def split(self) -> str:
        return "calib" if self.kind == "tuning" else "eval"

    @property
    def seed(self) -> int:
        """The passage seed of the session that computes this cell."""
        return self.size.seed

    def provenance(self, session: "Session") -> Mapping[str, Any]:
        return session.provenance()

    def plans(self, session: "Session | None" = None) -> LabelledPlans:
        if self.kind in ("head_to_head", "long_context"):
            return entry_plans(self.args["entries"])
        if self.kind == "frontier":
            return series_plans(self.args["series"], self.args["base"], self.args["points"])
        if self.kind == "tuning":
            return tuning_plans(self.args["k_steps"], self.args["v_steps"], base=self.args.get("base"))
        if self.kind == "ablation":
            return ablation_plans(self.args.get("block"))
        if self.kind == "depth":
            if session is None:
                raise ValueError("depth plans need the model's config (a session)")
            return depth_plans(session.config, [d for d in self.args["depths"] if d <= len(session.layers())])
        raise ValueError(f"unknown analysis {self.kind!r}; one of {ANALYSES}")

    def compute(self, session: "Session") -> tuple[list[dict[str, Any]], dict[str, Any]]:
        s = self.size
        rows, results = session.run(self.plans(session), s.ctx, s.n_eval, s.n_passages, s.calib_passages,
                                    k_metric=self.k_metric, split=self.split,
                                    passage_seed=TUNING_SEED if self.kind == "tuning" else None,
                                    exclude_calibration=bool(self.args.get("exclude_calibration")))
        if self.kind == "tuning":
            rows = mark_selected(rows, self.args["targets"])
        return rows, results


def mark_selected(rows: list[dict[str, Any]], targets: Sequence[float]) -> list[dict[str, Any]]:
    """Add ``selected_for_kl``: the KL targets for which :func:`select_by_kl` picks each row."""
    chosen = {t: select_by_kl(rows, t) for t in targets}
    return [{**r, "selected_for_kl": [t for t, c in chosen.items() if c is r]} for r in rows]


def _cell(profile: str, model: str, corpus: str, kind: str, size: Size, label: str | None = None, **extra: Any) -> Cell:
    return Cell(profile, model, corpus, f"e2e/{kind}", label or size.label, {**size.params(), **extra})


def _slug(name: str) -> str:
    """A cell-label-safe form of a series or entry name (``KVTC +sink`` -> ``KVTC-plus-sink``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name.replace("+", " plus ").replace(" -", " minus ")).strip("-")


def _labels(plans: LabelledPlans) -> list[str]:
    return [p.label for _, p in plans]


def _specs(plans: LabelledPlans) -> list[list[str]]:
    """[K spec, V spec] per plan: a cell is named by what it runs, not only by its row labels."""
    return [[p.k, p.v or p.k] for _, p in plans]


def _exact_tokens(plans: LabelledPlans) -> list[list[int]]:
    """[protect_tokens, hot_tokens, boundary] per plan: part of what identifies a comparison cell."""
    return [[p.protect_tokens, p.hot_tokens, p.boundary] for _, p in plans]


def _entries(pairs: Sequence[Any], recipes: Sequence[str], entries: Sequence[Any]) -> list[Any]:
    return [*pairs, *recipes, *entries]


def head_to_head(profile: str, model: str, corpus: str, size: Size, pairs: Sequence[str] = (),
                 recipes: Sequence[str] = (), k_metric: bool = False, entries: Sequence[Any] = (),
                 table: str | None = None) -> Task:
    """Comparison entries side by side (``table`` names a second head-to-head cell, e.g. ``gain``)."""
    every = _entries(pairs, recipes, entries)
    plans = entry_plans(every)
    label = None if table is None else f"{table}-{size.label}"
    extra = {} if table is None else {"table": table}
    return Task("head_to_head", _cell(profile, model, corpus, "head_to_head", size, label, k_metric=k_metric,
                                      plans=_labels(plans), specs=_specs(plans), exact_tokens=_exact_tokens(plans),
                                      **extra),
                size, {"entries": list(every)}, k_metric)


def frontier(profile: str, model: str, corpus: str, size: Size, series: str, base: Any,
             points: Sequence[Mapping[str, Any]]) -> Task:
    """One codec series at several rates (one cell per series)."""
    plans = series_plans(series, base, points)
    return Task("frontier", _cell(profile, model, corpus, "frontier", size, f"{_slug(series)}-{size.label}",
                                  series=series, plans=_labels(plans), specs=_specs(plans),
                                  exact_tokens=_exact_tokens(plans)),
                size, {"series": series, "base": base, "points": [dict(p) for p in points]})


def tuning(profile: str, model: str, corpus: str, size: Size, k_steps: Sequence[float], v_steps: Sequence[float],
           targets: Sequence[float], base: Mapping[str, Any] | None = None) -> Task:
    """A structure's grid steps on **calib-split** passages; rows marked with the targets they win.

    ``base`` (a comparison entry) tunes that structure instead of our recipe's; when its plans
    calibrate per-model tables (``calib=auto``), the tuning passages leave out every document of
    the calibration passages, so no parameter is chosen on text the tables were fitted on.
    The cell is named by the steps (its plan labels), not by the template's specs: a test checks
    that every stored row's specs are the current template at its steps.
    """
    plans = tuning_plans(k_steps, v_steps, base=base)
    extra: dict[str, Any] = {}
    args: dict[str, Any] = {"k_steps": list(k_steps), "v_steps": list(v_steps), "targets": list(targets)}
    label = None
    if base is not None:
        exclude = any(p.needs_calibration for _, p in plans)
        extra = {"base": dict(base), "exclude_calibration_docs": exclude}
        args.update(base=dict(base), exclude_calibration=exclude)
        label = f"{_slug(str(base['name']))}-{size.label}"
    return Task("tuning", _cell(profile, model, corpus, "tuning", size, label, split="calib", passage_seed=TUNING_SEED,
                                rule=TUNING_RULE, targets=list(targets), plans=_labels(plans), **extra),
                size, args)


def ablation(profile: str, model: str, corpus: str, size: Size) -> Task:
    """The stage-by-stage ladder."""
    plans = ablation_plans()
    return Task("ablation", _cell(profile, model, corpus, "ablation", size, plans=_labels(plans), specs=_specs(plans)),
                size, {})


def depth(profile: str, model: str, corpus: str, size: Size, depths: Sequence[int]) -> Task:
    """Our recipe on the first k layers, for each k in ``depths`` (clipped to the model)."""
    base = recipe_lib.load(HEADLINE_RECIPE).plan()
    return Task("depth", _cell(profile, model, corpus, "depth", size, depths=list(depths), recipe=HEADLINE_RECIPE,
                               specs=[[base.k, base.v or base.k]], exact_tokens=[[base.protect_tokens, base.hot_tokens, 0]]),
                size, {"depths": list(depths)})


def long_context(profile: str, model: str, corpus: str, size: Size, pairs: Sequence[str] = (),
                 recipes: Sequence[str] = (), entries: Sequence[Any] = ()) -> Task:
    """The same entries at a longer prefix (``size`` carries the long ``ctx`` and its passage count)."""
    every = _entries(pairs, recipes, entries)
    plans = entry_plans(every)
    return Task("long_context", _cell(profile, model, corpus, "long_context", size, plans=_labels(plans),
                                      specs=_specs(plans), exact_tokens=_exact_tokens(plans)),
                size, {"entries": list(every)})


def run_task(store: Store, task: Any, session: "Session", force: bool = False) -> CellResult:
    """The task's rows from the store, or computed with ``session`` and stored (atomically).

    ``task`` is a :class:`Task` or any cell task with ``cell``, ``compute(session)`` and
    ``provenance(session)`` (e.g. :class:`.mse_tasks.MseTask`).
    """
    if (session.model_name, session.corpus) != (task.cell.model, task.cell.corpus):
        raise ValueError(f"session is {session.model_name}/{session.corpus}, task wants {task.cell.model}/{task.cell.corpus}")
    return store.run(task.cell, lambda: task.compute(session), force=force, provenance_extra=task.provenance(session))


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
    _passages: dict[tuple[Any, ...], Any] = dataclasses.field(default_factory=dict, repr=False)
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

    def passages(self, ctx: int, n_eval: int, n: int, split: str = "eval", seed: int | None = None,
                 exclude_docs: Sequence[str] = ()) -> list[Any]:
        """``n`` passages of ``ctx + n_eval`` tokens from ``split`` (seeded, cached), none from ``exclude_docs``."""
        seed = self.seed if seed is None else seed
        key = (ctx, n_eval, n, split, seed, tuple(sorted(exclude_docs)))
        if key not in self._passages:
            from ..llm import corpora  # noqa: PLC0415

            self._passages[key] = corpora.passages(self.corpus, self.loaded.tokenizer, ctx, n_eval, n, seed,
                                                   split=split, bos=self.loaded.needs_bos, exclude_docs=exclude_docs)
        return self._passages[key]

    def calibration_docs(self, ctx: int, calib_passages: int) -> list[str]:
        """Documents of the calib-split passages that per-model calibrations are fitted on."""
        kwargs = self.calibration_kwargs(calib_passages)
        chosen = self.passages(ctx, 0, calib_passages, "calib", kwargs["calib_seed"])
        return sorted({d for p in chosen for d in p.doc_ids})

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
        from ..llm.models import full_attention_layers  # noqa: PLC0415

        return full_attention_layers(self.config)

    def rope_frequencies(self) -> dict[int, Any]:
        """Each compressible layer's RoPE frequency table [D/2]."""
        return {layer: whitening.rope_frequencies(self.model, layer) for layer in self.layers()}

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
            k_metric: bool = False, split: str = "eval", passage_seed: int | None = None,
            exclude_calibration: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Evaluate plans on this session's passages of ``split``:
        (rows, {"results", "passage_ids", "doc_ids", "split"}).

        ``exclude_calibration``: no passage from a document of the calibration passages (tuning a
        calibrated codec on the calib split).
        """
        exclude = self.calibration_docs(ctx, calib_passages) if exclude_calibration else ()
        chosen = self.passages(ctx, n_eval, n_passages, split, passage_seed, exclude)
        metric = self.k_metric(ctx, calib_passages) if k_metric else None
        rows, results = evaluate_rows(self.model, [p.input_ids for p in chosen], ctx, labelled, progress=self.progress,
                                      seed=self.seed, k_metric=metric, **self.calibration_kwargs(calib_passages))
        return rows, {"results": results, "split": split, "passage_ids": [p.passage_id for p in chosen],
                      "doc_ids": [list(p.doc_ids) for p in chosen]}

    def provenance(self, **extra: Any) -> Mapping[str, Any]:
        """Fields for the store's provenance sidecar."""
        return {"device": "cpu (torch)", "seed": self.seed, "model": self.model_name, "corpus": self.corpus, **extra}
