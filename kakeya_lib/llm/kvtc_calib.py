"""KVTC calibration artifacts: per-layer PCA bases, means and quantiser tables (arXiv 2511.01815).

KVTC is calibrated once per model. For every compressed layer and stream (``k``: pre-RoPE keys,
``v``: values) this module fits, on rows pooled over calibration passages:

* the mean ``μ`` of a token's vector and an orthonormal PCA basis ``U`` with the eigenvalues
  ``λ`` of the covariance, in descending order. Two layouts (``modes``):

  - ``concat`` (the paper's): a token's KV heads concatenated, ``W = heads · D`` coordinates,
    ``μ`` [W], ``U`` [W, W] (columns = principal directions), ``λ`` [W];
  - ``head``: one PCA per KV head, ``μ`` [W] (head-major), ``U`` [heads, D, D], ``λ`` [W]
    (head ``h``'s eigenvalues at ``h·D … h·D + D − 1``, descending within a head).

  The covariance is accumulated in float64 and decomposed with ``eigh``; each eigenvector's
  sign is fixed (its largest-magnitude entry positive) so a refit gives the same basis.
* for every coordinate ``i`` of ``y = (x − μ) U`` and width ``b = 1 … max_bits``, the step
  ``Δ[i, b]`` of the codec's mid-rise uniform quantiser and its distortion ``D[i, b]``
  (``D[i, 0]`` = mean square), *measured* on the calibration coordinates themselves
  (:func:`~kakeya_lib.stages.bit_allocation.measured_distortion_table`), or the Gaussian model
  (``distortion="gaussian"``). The codec's dynamic programme reads ``D``, its quantiser ``Δ``.

Rows come in the harness's layout: ``[T·heads, D]``, token-major with the heads interleaved (row
``t·heads + h``; :mod:`kakeya_lib.layout`). Keys are pre-RoPE already (the patched cache
stores them so), which is what KVTC asks for ("RoPE removed").

Files (no pickle): ``calib_dir()/NAME.npz`` (``np.savez``; read with ``allow_pickle=False``)
holding float32 arrays ``L{layer}.{k|v}.{mode}.{mean|basis|eig|step|dist}``, and a JSON sidecar
``NAME.json`` (format, version, model, corpus, passages, ctx, protected tokens, heads,
head_dim, layers, modes, max_bits, fingerprints, sizes, provenance). :func:`artifact_nbytes`
is the bytes of the arrays as stored (float32: what the codec computes with), i.e. what a
deployment keeps per model besides the weights; ``meta["nbytes"]`` has it per kind.

:func:`calibrate_kvtc_on_corpus` cuts passages from the corpus's **calib** split, captures
pre-RoPE K/V (:func:`~kakeya_lib.llm.capture.capture_passage`), drops each passage's first
``protect_tokens`` tokens (the plan keeps them exact; the codec never sees them), fits, saves,
and returns the artifact name, which is derived from everything the artifact depends on
(model fingerprint, corpus, passage tokens, ctx, passage count, protected tokens, fit options).

One concept (over 400 lines): KVTC's per-model calibration, from fitting to the stored artifact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import provenance
from ..atomic import tmp_sibling, write_text_atomic
from ..errors import CorruptBlobError, InputError
from ..stages import bit_allocation
from .calibration_inputs import (
    calib_dir,
    calib_passages,
    model_fingerprint,
    model_label,
    passages_fingerprint,
    slug,
    token_lists,
)
from .models import family_of, full_attention_layers

FORMAT = "kakeya-kvtc"
FORMAT_VERSION = 1
MODES = ("concat", "head")
STREAMS = ("k", "v")
FIELDS = ("mean", "basis", "eig", "step", "dist")
DEFAULT_PASSAGES = 8
DEFAULT_MAX_SAMPLES = 32768  # token vectors per (layer, stream) for the step search and D table
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_ORTHO_TOL = 1e-3


# --------------------------------------------------------------------------------------------
# One (layer, stream, mode)


@dataclass(frozen=True)
class StreamCalib:
    """The fitted transform and quantiser tables of one (layer, stream, mode).

    Attributes
    ----------
    mode : ``"concat"`` or ``"head"``
    heads, head_dim : KV heads per token and their dimension D; ``W = heads · head_dim``
    mean : float32 [W], a token's mean vector (heads concatenated)
    basis : float32 [W, W] (concat) or [heads, D, D] (head); columns are principal directions
    eig : float32 [W], covariance eigenvalues (descending; per head in ``head`` mode)
    step : float32 [W, max_bits], quantiser step of coordinate ``i`` at ``b`` bits in ``[i, b−1]``
    dist : float32 [W, max_bits + 1], distortion of coordinate ``i`` at ``b`` bits
    """

    mode: str
    heads: int
    head_dim: int
    mean: np.ndarray
    basis: np.ndarray
    eig: np.ndarray
    step: np.ndarray
    dist: np.ndarray
    digest: bytes = field(default=b"", compare=False)

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    @property
    def max_bits(self) -> int:
        return int(self.step.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FIELDS}

    def project(self, x: Any, xp: Any = np) -> Any:
        """``y = (x − μ) U``: token vectors [T, W] → coordinates [T, W] (float32 on ``xp``)."""
        from ..backend import to_device  # noqa: PLC0415

        xc = x.astype(xp.float32) - to_device(self.mean, xp)
        u = to_device(self.basis, xp)
        if self.mode == "concat":
            return xc @ u
        t = xc.shape[0]
        y = xp.einsum("thd,hde->the", xc.reshape(t, self.heads, self.head_dim), u)
        return y.reshape(t, self.width)

    def reconstruct(self, y: Any, xp: Any = np) -> Any:
        """``x̂ = μ + y Uᵀ``: coordinates [T, W] → token vectors [T, W] (float32 on ``xp``)."""
        from ..backend import to_device  # noqa: PLC0415

        u = to_device(self.basis, xp)
        y = y.astype(xp.float32)
        if self.mode == "concat":
            out = y @ u.T
        else:
            t = y.shape[0]
            out = xp.einsum("the,hde->thd", y.reshape(t, self.heads, self.head_dim), u).reshape(t, self.width)
        return out + to_device(self.mean, xp)


def _digest(mode: str, arrays: Mapping[str, np.ndarray]) -> bytes:
    """8 bytes of SHA-256 over the mode and the stored arrays: blobs carry it so that a blob is
    never decoded against a different fit stored under the same name."""
    h = hashlib.sha256(f"{FORMAT}/{FORMAT_VERSION}/{mode};".encode())
    for name in FIELDS:
        a = np.ascontiguousarray(arrays[name], dtype="<f4")
        h.update(f"{name}{a.shape};".encode())
        h.update(a.tobytes())
    return h.digest()[:8]


def _make_stream(mode: str, heads: int, head_dim: int, arrays: Mapping[str, np.ndarray]) -> StreamCalib:
    fixed = {}
    for name in FIELDS:
        a = np.ascontiguousarray(arrays[name], dtype=np.float32)
        a.setflags(write=False)
        fixed[name] = a
    return StreamCalib(mode, heads, head_dim, digest=_digest(mode, fixed), **fixed)


def _expected_shapes(mode: str, heads: int, d: int, max_bits: int) -> dict[str, tuple[int, ...]]:
    w = heads * d
    return {
        "mean": (w,),
        "basis": (w, w) if mode == "concat" else (heads, d, d),
        "eig": (w,),
        "step": (w, max_bits),
        "dist": (w, max_bits + 1),
    }


# --------------------------------------------------------------------------------------------
# The artifact


@dataclass
class KVTCCalib:
    """Per-(layer, stream, mode) :class:`StreamCalib` plus the sidecar fields.

    Attributes
    ----------
    streams : (layer, ``"k"|"v"``, mode) → StreamCalib
    meta : the JSON sidecar (see the module docstring)
    name : artifact name (file stem) once saved or loaded
    """

    streams: dict[tuple[int, str, str], StreamCalib]
    meta: dict[str, Any]
    name: str | None = None

    @property
    def heads(self) -> int:
        return int(self.meta["heads"])

    @property
    def head_dim(self) -> int:
        return int(self.meta["head_dim"])

    @property
    def max_bits(self) -> int:
        return int(self.meta["max_bits"])

    @property
    def layers(self) -> list[int]:
        return sorted({key[0] for key in self.streams})

    @property
    def modes(self) -> list[str]:
        return [m for m in MODES if any(key[2] == m for key in self.streams)]

    def get(self, layer: int, stream: str, mode: str) -> StreamCalib:
        """The tables of one (layer, stream, mode); :class:`InputError` naming what exists otherwise."""
        key = (int(layer), str(stream), str(mode))
        if key not in self.streams:
            label = self.name or "unsaved"
            if key[2] not in self.modes:
                raise InputError(f"KVTC calibration {label!r} has no pca={mode!r} fit "
                                 f"(it has: {', '.join(self.modes)})")
            raise InputError(f"KVTC calibration {label!r} has no layer {layer} stream {stream!r} "
                             f"(layers: {', '.join(map(str, self.layers)) or 'none'})")
        return self.streams[key]

    def nbytes(self) -> dict[str, int]:
        """Bytes of the stored arrays per kind (float32) and in total."""
        out = {name: 0 for name in FIELDS}
        for s in self.streams.values():
            for name, a in s.arrays().items():
                out[name] += int(a.nbytes)
        out["total"] = sum(out[name] for name in FIELDS)
        return out

    def save(self, name: str) -> Path:
        """Write ``NAME.npz`` + ``NAME.json`` into :func:`calib_dir` (atomically: npz last)."""
        path = artifact_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"L{layer}.{stream}.{mode}.{f}": a
                  for (layer, stream, mode), s in sorted(self.streams.items()) for f, a in s.arrays().items()}
        self.meta["nbytes"] = self.nbytes()
        self.meta["layers"] = self.layers
        self.meta["modes"] = self.modes
        self.meta["digests"] = {f"L{layer}.{stream}.{mode}": s.digest.hex()
                                for (layer, stream, mode), s in sorted(self.streams.items())}
        tmp = tmp_sibling(path, ".npz")
        np.savez(tmp, **arrays)
        write_text_atomic(path.with_suffix(".json"), json.dumps(self.meta, indent=2))
        tmp.replace(path)
        self.name = name
        _load_cached.cache_clear()
        return path


def artifact_path(name: str) -> Path:
    """``calib_dir()/NAME.npz``; names are plain (no paths), so a spec never carries a path."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"KVTC calibration name {name!r} is not valid: use letters, digits, '.', '_', '-' "
                         "(a name in the calibration folder, not a path)")
    return calib_dir() / f"{name}.npz"


def available() -> list[str]:
    """Names of the KVTC artifacts in :func:`calib_dir`."""
    folder = calib_dir()
    return sorted(p.stem for p in folder.glob("*.npz")
                  if ".tmp" not in p.name and p.with_suffix(".json").is_file()) if folder.is_dir() else []


def exists(name: str) -> bool:
    try:
        path = artifact_path(name)
    except InputError:
        return False
    return path.is_file() and path.with_suffix(".json").is_file()


def load_kvtc(name: str) -> KVTCCalib:
    """Load and validate an artifact by name (cached per file version; the arrays are read-only).

    Raises :class:`InputError` for an invalid or unknown name (listing what is available) and
    :class:`CorruptBlobError` for unreadable or inconsistent contents (missing or unexpected
    array, wrong shape, non-finite values, non-orthonormal basis, steps <= 0, distortions < 0).
    """
    path = artifact_path(name)
    if not path.is_file():
        names = available()
        raise InputError(f"no KVTC calibration {name!r} (looked for {path}); available in {calib_dir()}: "
                         f"{', '.join(names) or 'none'}; make one with kvtc_calib.calibrate_kvtc_on_corpus")
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


def load_for_codec(codec: str, name: str, layer: int, heads: int) -> KVTCCalib:
    """The artifact a calibrated codec's spec names, checked against the spec's ``layer`` and ``heads``.

    Raises :class:`InputError` naming ``codec`` when ``layer`` is unset or the artifact was fitted
    with another number of KV heads per token (and, from :func:`load_kvtc`, when it is unknown).
    """
    if layer < 0:
        raise InputError(f"{codec} needs the model layer whose tables to use: set layer=N in the spec")
    art = load_kvtc(name)
    if art.heads != heads:
        raise InputError(f"{codec}: spec has heads={heads} but calibration {name!r} was fitted with "
                         f"{art.heads} KV heads per token")
    return art


def artifact_nbytes(name: str) -> int:
    """Bytes of an artifact's arrays as stored (float32 means, bases, eigenvalues, steps, tables)."""
    return load_kvtc(name).nbytes()["total"]


def _load_cached_impl(path_str: str, _mtime: int, _size: int) -> KVTCCalib:
    path = Path(path_str)
    side = path.with_suffix(".json")
    if not side.is_file():
        raise InputError(f"{path.name}: its JSON sidecar {side.name} is missing")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptBlobError(f"{side.name}: not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise CorruptBlobError(f"{side.name}: format {meta.get('format')!r} v{meta.get('version')!r}, "
                               f"expected {FORMAT!r} v{FORMAT_VERSION}")
    try:
        heads, d, max_bits = int(meta["heads"]), int(meta["head_dim"]), int(meta["max_bits"])
        layers = [int(v) for v in meta["layers"]]
        modes = [str(m) for m in meta["modes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptBlobError(f"{side.name}: field missing or malformed ({exc})") from exc
    if heads < 1 or d < 1 or not 1 <= max_bits <= bit_allocation.MAX_BITS or not set(modes) <= set(MODES):
        raise CorruptBlobError(f"{side.name}: heads={heads}, head_dim={d}, max_bits={max_bits}, "
                               f"modes={modes} out of range")
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}
    except Exception as exc:  # noqa: BLE001  (zipfile / numpy raise several types)
        raise CorruptBlobError(f"{path.name}: not a readable .npz without pickles "
                               f"({type(exc).__name__}: {exc})") from exc
    expected = {f"L{l}.{s}.{m}.{f}" for l in layers for s in STREAMS for m in modes for f in FIELDS}
    extra = sorted(set(stored) - expected)
    if extra:
        raise CorruptBlobError(f"{path.name}: unexpected array(s) {', '.join(extra[:5])} not listed in the sidecar")
    streams: dict[tuple[int, str, str], StreamCalib] = {}
    for layer in layers:
        for stream in STREAMS:
            for mode in modes:
                prefix = f"L{layer}.{stream}.{mode}"
                shapes = _expected_shapes(mode, heads, d, max_bits)
                arrays = {}
                for f in FIELDS:
                    key = f"{prefix}.{f}"
                    if key not in stored:
                        raise CorruptBlobError(f"{path.name}: array {key!r} is missing")
                    a = stored[key]
                    if a.dtype != np.float32:
                        raise CorruptBlobError(f"{path.name}: {key!r} has dtype {a.dtype}, expected float32")
                    if a.shape != shapes[f]:
                        raise CorruptBlobError(f"{path.name}: {key!r} has shape {a.shape}, expected {shapes[f]}")
                    if not np.isfinite(a).all():
                        raise CorruptBlobError(f"{path.name}: {key!r} holds NaN/Inf")
                    arrays[f] = a
                if not (arrays["step"] > 0).all() or (arrays["dist"] < 0).any() or (arrays["eig"] < 0).any():
                    raise CorruptBlobError(f"{path.name}: {prefix}: steps must be > 0, "
                                           "distortions and eigenvalues >= 0")
                u = arrays["basis"].astype(np.float64)
                u = u[None] if mode == "concat" else u
                err = float(np.abs(np.swapaxes(u, 1, 2) @ u - np.eye(u.shape[-1])).max())
                if err > _ORTHO_TOL:
                    raise CorruptBlobError(f"{path.name}: {prefix}.basis is not orthonormal "
                                           f"(max |UᵀU − I| = {err:.3g})")
                streams[(layer, stream, mode)] = _make_stream(mode, heads, d, arrays)
    return KVTCCalib(streams, meta, path.stem)


# Bounded: one entry per artifact file version; codecs of every layer share the loaded arrays.
_load_cached = functools.lru_cache(maxsize=8)(_load_cached_impl)


# --------------------------------------------------------------------------------------------
# Fitting


def _pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean [W], eigenvalues [W] (descending, >= 0) and sign-fixed eigenvectors [W, W] (columns)."""
    mean = x.mean(axis=0, dtype=np.float64)
    xc = x.astype(np.float64) - mean
    cov = xc.T @ xc / x.shape[0]
    ev, vec = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(ev)[::-1]
    ev, vec = np.maximum(ev[order], 0.0), vec[:, order]
    peak = np.argmax(np.abs(vec), axis=0)
    vec = vec * np.where(vec[peak, np.arange(vec.shape[1])] < 0, -1.0, 1.0)[None, :]
    return mean, ev, vec


def _fit_stream(rows: np.ndarray, heads: int, mode: str, max_bits: int, max_samples: int,
                distortion: str, rng: np.random.Generator) -> StreamCalib:
    n, d = rows.shape
    t = n // heads
    x = rows.reshape(t, heads * d)  # token vectors, heads concatenated
    if mode == "concat":
        mean, eig, basis = _pca(x)
    else:
        parts = [_pca(x[:, h * d : (h + 1) * d]) for h in range(heads)]
        mean = np.concatenate([p[0] for p in parts])
        eig = np.concatenate([p[1] for p in parts])
        basis = np.stack([p[2] for p in parts])
    proto = _make_stream(mode, heads, d, {
        "mean": mean, "basis": basis, "eig": eig,
        "step": np.ones((heads * d, max_bits)), "dist": np.zeros((heads * d, max_bits + 1)),
    })
    if distortion == "gaussian":
        step, dist = bit_allocation.gaussian_distortion_table(proto.eig.astype(np.float64), max_bits)
    else:
        pick = np.sort(rng.choice(t, size=max_samples, replace=False)) if t > max_samples else slice(None)
        y = proto.project(x[pick])  # with the float32 mean and basis the codec will use
        step, dist = bit_allocation.measured_distortion_table(y, max_bits)
    return _make_stream(mode, heads, d, {"mean": mean, "basis": basis, "eig": eig, "step": step, "dist": dist})


def fit_kvtc(
    kv: Mapping[int, tuple[np.ndarray, np.ndarray]],
    heads: int,
    *,
    modes: Sequence[str] = MODES,
    max_bits: int = bit_allocation.MAX_BITS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    distortion: str = "measured",
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> KVTCCalib:
    """Fit KVTC's per-layer transforms and quantiser tables (see the module docstring).

    Parameters
    ----------
    kv : layer → (K rows, V rows), each [T·heads, D] float (token-major, heads interleaved: row
        ``t·heads + h``), pooled over the calibration passages; keys pre-RoPE
    heads : KV heads per token
    modes : which PCA layouts to fit: ``"concat"`` (heads concatenated, the paper's), ``"head"``
    max_bits : widest quantiser the codec may use (1..8; the DP's ``B_max``)
    max_samples : token vectors (seeded subsample) on which steps and distortions are measured
    distortion : ``"measured"`` (quantise the calibration coordinates) or ``"gaussian"`` (model)
    seed : subsampling seed
    meta : extra sidecar fields (model, corpus, passages ...)

    Returns
    -------
    KVTCCalib (unsaved; :meth:`KVTCCalib.save` writes it)
    """
    if not isinstance(heads, (int, np.integer)) or heads < 1:
        raise InputError(f"heads must be a positive integer, got {heads!r}")
    modes = tuple(dict.fromkeys(modes))
    if not modes or not set(modes) <= set(MODES):
        raise InputError(f"modes must be a non-empty subset of {MODES}, got {modes!r}")
    if distortion not in ("measured", "gaussian"):
        raise InputError(f"distortion must be 'measured' or 'gaussian', got {distortion!r}")
    if (isinstance(max_bits, bool) or not isinstance(max_bits, (int, np.integer))
            or not 1 <= max_bits <= bit_allocation.MAX_BITS):
        raise InputError(f"max_bits must be an integer in 1..{bit_allocation.MAX_BITS}, got {max_bits!r}")
    if not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise InputError(f"max_samples must be a positive integer, got {max_samples!r}")
    if not kv:
        raise InputError("no calibration rows: kv is empty")
    head_dim = None
    streams: dict[tuple[int, str, str], StreamCalib] = {}
    counts: dict[str, int] = {}
    rng = np.random.default_rng(seed)
    for layer in sorted(kv):
        pair = kv[layer]
        if len(pair) != 2:
            raise InputError(f"layer {layer}: expected a (K rows, V rows) pair")
        for stream, rows in zip(STREAMS, pair):
            rows = np.asarray(rows)
            where = f"layer {layer} {stream.upper()}"
            if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[0] % heads:
                raise InputError(f"{where}: rows must be [T·{heads}, D] with T >= 1, got shape {rows.shape}")
            if rows.dtype.kind != "f" or not np.isfinite(rows).all():
                raise InputError(f"{where}: rows must be finite floats")
            if head_dim is None:
                head_dim = int(rows.shape[1])
            elif rows.shape[1] != head_dim:
                raise InputError(f"{where}: head dim {rows.shape[1]} differs from the first layer's {head_dim}")
            t = rows.shape[0] // heads
            if t < 2:
                raise InputError(f"{where}: {t} token(s) are too few to fit a PCA")
            counts[f"L{layer}.{stream}"] = t
            for mode in modes:
                streams[(int(layer), stream, mode)] = _fit_stream(rows, int(heads), mode, int(max_bits),
                                                                  int(max_samples), distortion, rng)
    info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "heads": int(heads),
        "head_dim": int(head_dim),
        "max_bits": int(max_bits),
        "modes": list(modes),
        "layers": sorted(int(l) for l in kv),
        "distortion": distortion,
        "max_samples": int(max_samples),
        "seed": int(seed),
        "n_tokens": counts,
        "storage": "f32",
        **(meta or {}),
    }
    cal = KVTCCalib(streams, info)
    info["nbytes"] = cal.nbytes()
    return cal


# --------------------------------------------------------------------------------------------
# Calibration on a corpus


def artifact_name(model: str, corpus: str, ctx: int, n_passages: int, protect_tokens: int, fingerprint: str) -> str:
    """``kvtc-{model}-{corpus}-ctx{ctx}-n{n}-p{protect}-{fingerprint[:10]}``."""

    corpus_part = slug(Path(corpus).name if ("/" in str(corpus) or "\\" in str(corpus)) else corpus, 24)
    return f"kvtc-{slug(model, 32)}-{corpus_part}-ctx{ctx}-n{n_passages}-p{protect_tokens}-{fingerprint[:10]}"


def calibrate_kvtc_on_corpus(
    model: Any,
    tokenizer: Any,
    corpus: Any,
    ctx: int,
    n_passages: int = DEFAULT_PASSAGES,
    seed: int = 0,
    bos: bool | None = None,
    protect_tokens: int = 0,
    model_name: str | None = None,
    refresh: bool = False,
    *,
    modes: Sequence[str] = MODES,
    max_bits: int = bit_allocation.MAX_BITS,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    distortion: str = "measured",
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> str:
    """Calibrate KVTC on ``n_passages`` calib-split passages of ``ctx`` tokens; returns the name.

    An artifact of the same name in :func:`calib_dir` is reused (``refresh=True`` refits). The
    name carries model, corpus, ctx, passage count and ``protect_tokens`` plus a fingerprint of
    the model weights, the passage tokens, ``protect_tokens`` and the fit options. ``bos``
    defaults to True for Gemma3 (as the harness). ``layers`` default: every full-attention layer.
    """
    from . import corpora  # noqa: PLC0415
    from .capture import capture_passage  # noqa: PLC0415

    if bos is None:
        bos = family_of(model.config) == "gemma3"
    if not isinstance(protect_tokens, (int, np.integer)) or protect_tokens < 0:
        raise InputError(f"protect_tokens must be a non-negative integer, got {protect_tokens!r}")
    if protect_tokens + 2 > ctx:
        raise InputError(f"protect_tokens={protect_tokens} leaves fewer than 2 of ctx={ctx} tokens to calibrate on")
    corp = corpus if isinstance(corpus, corpora.Corpus) else corpora.load_corpus(corpus)
    chosen = calib_passages(corp, tokenizer, ctx, n_passages, seed, bool(bos))
    ids_list = token_lists(chosen)  # refuses eval-split records
    cfg = model.config
    use_layers = sorted(int(l) for l in (full_attention_layers(cfg) if layers is None else layers))
    options = {"protect_tokens": int(protect_tokens), "modes": list(dict.fromkeys(modes)), "max_bits": int(max_bits),
               "max_samples": int(max_samples), "distortion": distortion, "layers": use_layers, "seed": int(seed),
               "format_version": FORMAT_VERSION}
    model_fp, passages_fp = model_fingerprint(model), passages_fingerprint(ids_list)
    key = model_fp + passages_fp + json.dumps(options, sort_keys=True)
    fp = hashlib.sha256(key.encode()).hexdigest()
    label = model_name or model_label(model)
    name = artifact_name(label, corp.name, ctx, len(ids_list), int(protect_tokens), fp)
    if not refresh and exists(name):
        return name

    k_rows: dict[int, list[np.ndarray]] = {l: [] for l in use_layers}
    v_rows: dict[int, list[np.ndarray]] = {l: [] for l in use_layers}
    iterator: Any = ids_list
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        iterator = tqdm(ids_list, desc="KVTC calibration passages", unit="passage")
    heads = int(cfg.num_key_value_heads)
    for ids in iterator:
        tensors = capture_passage(model, ids)
        for layer in use_layers:
            for store, kind in ((k_rows, "k"), (v_rows, "v")):
                t = tensors[f"layer{layer}.{kind}"][:, protect_tokens:, :]  # [H, T', D], protected tokens dropped
                store[layer].append(t.permute(1, 0, 2).reshape(-1, t.shape[-1]).numpy())  # row t·H + h
        del tensors
    kv = {l: (np.concatenate(k_rows.pop(l)), np.concatenate(v_rows.pop(l))) for l in use_layers}
    cal = fit_kvtc(
        kv, heads, modes=modes, max_bits=max_bits, max_samples=max_samples, distortion=distortion, seed=seed,
        meta={
            "model": label,
            "corpus": corp.name,
            "split": "calib",
            "ctx": int(ctx),
            "n_passages": len(ids_list),
            "bos": bool(bos),
            "protect_tokens": int(protect_tokens),
            "passage_ids": [getattr(p, "passage_id", None) for p in chosen],
            "doc_ids": sorted({d for p in chosen for d in getattr(p, "doc_ids", ())}),
            "model_fingerprint": model_fp,
            "passages_fingerprint": passages_fp,
            "provenance": provenance.collect(command="kvtc_calib.calibrate_kvtc_on_corpus"),
        },
    )
    del kv
    cal.save(name)
    return name
