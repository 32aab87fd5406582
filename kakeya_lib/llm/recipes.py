"""Recipes: YAML files naming a whole KV configuration (K spec, V spec, boundary layers,
protected tokens, required features), built in under ``kakeya_lib/recipes/`` or given by path.

Fields: ``name``, ``family`` (``seed`` reproduces the seed system, ``ours`` is ours),
``description``, ``k``, ``v``, ``boundary``, ``boundary_k``, ``boundary_v``, ``protect_tokens``,
``requires`` (features the recipe needs), ``source`` and ``transfer_notes`` (what was tuned for
another model), ``tuning`` (for tuned recipes: ``{cell: <store path of the e2e/tuning cell>,
target_kl: <the KL target whose selection the recipe ships>}``; the cell's passages come from the
calib split, and a test checks that the recipe's specs are the ones that cell selected), and the calibration fields of :class:`~.plan.KVPlan`: ``qprecond`` (``calib`` or
an artifact name), ``qprecond_variant`` (``plain`` | ``rope``), ``qprecond_skip`` (layer list,
negative = from the end; default ``[0]``), ``calibrated_codebook`` (bool) and ``k_step_scale`` /
``v_step_scale`` (one step factor per model layer: rate allocated across layers) or
``layer_steps: auto`` (those factors from each layer's measured sensitivity, :mod:`.layer_steps`), and
``saliency_queries`` (token weights from the prefix's last queries, :mod:`.saliency`). A recipe whose
``requires`` names a feature this version lacks is refused with a message saying which, never run
without it; one that requires ``qprecond`` or ``calibrated_codebook`` must also set that field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..paths import PACKAGE_DIR
from .plan import KVPlan

RECIPES_DIR = PACKAGE_DIR / "recipes"
IMPLEMENTED_FEATURES: frozenset[str] = frozenset({"qprecond", "calibrated_codebook", "besicovitch"})
KNOWN_FEATURES = frozenset({"qprecond", "calibrated_codebook", "besicovitch"})
_FIELDS = {"name", "family", "description", "k", "v", "boundary", "boundary_k", "boundary_v", "protect_tokens",
           "requires", "source", "transfer_notes", "qprecond", "qprecond_variant", "qprecond_skip",
           "calibrated_codebook", "tuning", "k_step_scale", "v_step_scale", "layer_steps", "saliency_queries"}


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    description: str
    k: str
    v: str | None
    boundary: int
    boundary_k: str | None
    boundary_v: str | None
    protect_tokens: int
    requires: tuple[str, ...]
    source: str
    transfer_notes: str
    qprecond: str | None = None
    qprecond_variant: str = "plain"
    qprecond_skip: tuple[int, ...] = (0,)
    calibrated_codebook: bool = False
    tuning: dict[str, Any] | None = None
    k_step_scale: tuple[float, ...] | None = None
    v_step_scale: tuple[float, ...] | None = None
    layer_steps: str | None = None
    saliency_queries: int = 0

    @property
    def missing(self) -> list[str]:
        return sorted(set(self.requires) - IMPLEMENTED_FEATURES)

    def plan(self) -> KVPlan:
        """The recipe as a :class:`KVPlan`; refused when it needs a feature not implemented."""
        if self.missing:
            raise InputError(
                f"recipe {self.name!r} needs {', '.join(self.missing)}, not implemented in this version; "
                "it is listed so the paper can name it, and will run once those land"
            )
        if "qprecond" in self.requires and self.qprecond is None:
            raise InputError(f"recipe {self.name!r} requires qprecond but sets no 'qprecond' field (e.g. qprecond: calib)")
        if "calibrated_codebook" in self.requires and not self.calibrated_codebook:
            raise InputError(f"recipe {self.name!r} requires calibrated_codebook but does not set 'calibrated_codebook: true'")
        return KVPlan(self.k, self.v, boundary=self.boundary, boundary_k=self.boundary_k,
                      boundary_v=self.boundary_v, protect_tokens=self.protect_tokens, name=self.name,
                      qprecond=self.qprecond, qprecond_variant=self.qprecond_variant,
                      qprecond_skip=self.qprecond_skip, calibrated_codebook=self.calibrated_codebook,
                      k_step_scale=self.k_step_scale, v_step_scale=self.v_step_scale, layer_steps=self.layer_steps,
                      saliency_queries=self.saliency_queries)


def names() -> list[str]:
    """Built-in recipe names, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _parse(data: Any, where: str) -> Recipe:
    if not isinstance(data, dict):
        raise InputError(f"{where}: a recipe must be a YAML mapping")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown recipe field(s) {', '.join(unknown)}; valid: {', '.join(sorted(_FIELDS))}")
    for key in ("name", "k"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise InputError(f"{where}: field {key!r} is required and must be a string")
    requires = tuple(data.get("requires") or ())
    unknown_features = sorted(set(requires) - KNOWN_FEATURES)
    if unknown_features:
        raise InputError(f"{where}: unknown required feature(s) {', '.join(unknown_features)}")
    skip = data.get("qprecond_skip", [0])
    skip = [skip] if isinstance(skip, int) else skip
    if not isinstance(skip, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in skip):
        raise InputError(f"{where}: qprecond_skip must be a list of layer indices, got {data.get('qprecond_skip')!r}")
    cal = data.get("calibrated_codebook", False)
    if not isinstance(cal, bool):
        raise InputError(f"{where}: calibrated_codebook must be true or false, got {cal!r}")
    tuning = data.get("tuning")
    if tuning is not None and (not isinstance(tuning, dict) or set(tuning) != {"cell", "target_kl"}):
        raise InputError(f"{where}: tuning must be a mapping with exactly 'cell' and 'target_kl', got {tuning!r}")
    scales = {}
    for key in ("k_step_scale", "v_step_scale"):
        value = data.get(key)
        if value is not None and (not isinstance(value, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)):
            raise InputError(f"{where}: {key} must be a list of numbers (one factor per layer), got {value!r}")
        scales[key] = None if value is None else tuple(float(x) for x in value)
    saliency_queries = data.get("saliency_queries", 0)
    if not isinstance(saliency_queries, int) or isinstance(saliency_queries, bool) or saliency_queries < 0:
        raise InputError(f"{where}: saliency_queries must be an integer >= 0, got {saliency_queries!r}")
    qprecond = data.get("qprecond")
    if qprecond is not None and (not isinstance(qprecond, str) or not qprecond):
        raise InputError(f"{where}: qprecond must be 'calib' or an artifact name, got {qprecond!r}")
    return Recipe(
        name=data["name"], family=str(data.get("family", "ours")), description=str(data.get("description", "")).strip(),
        k=data["k"], v=data.get("v"), boundary=int(data.get("boundary", 0)), boundary_k=data.get("boundary_k"),
        boundary_v=data.get("boundary_v"), protect_tokens=int(data.get("protect_tokens", 0)), requires=requires,
        source=str(data.get("source", "")), transfer_notes=str(data.get("transfer_notes", "")).strip(),
        qprecond=qprecond, qprecond_variant=str(data.get("qprecond_variant", "plain")), qprecond_skip=tuple(skip),
        calibrated_codebook=cal, tuning=tuning, **scales, layer_steps=data.get("layer_steps"),
        saliency_queries=saliency_queries,
    )


def load(name_or_path: str) -> Recipe:
    """A built-in recipe by name, or a recipe YAML file by path."""
    import yaml  # noqa: PLC0415

    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise InputError(f"unknown recipe {name_or_path!r}; built-in recipes: {', '.join(names())}")
    elif not path.is_file():
        raise InputError(f"recipe file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path.name}: not valid YAML: {exc}") from exc
    return _parse(data, path.name)
