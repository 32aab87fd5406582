"""The ``kakeya`` command (also ``python -m kakeya_lib``).

Sub-commands::

    kakeya codecs                                   list codecs and their spec keys
    kakeya roundtrip --codec SPEC --input X.npy [--output Y.npy] [--json]
    kakeya bench [--codecs SPEC ...] [--dims D ...] [--rows N ...] [--data KIND ...] [--device cpu|gpu]
                 [--forward] [--json FILE]            codec speed suite (benchmarks/README.md)
    kakeya demo                                     the `make reproduce` table on synthetic data
    kakeya eval --model NAME --corpus NAME --codec SPEC [--k-codec SPEC --v-codec SPEC] ... --json OUT
    kakeya capture --model NAME --corpus NAME --ctx N --passages P --out DIR
    kakeya sweep FILE.yaml [--list]                 a grid of end-to-end cells into the results store
    kakeya recipes                                  built-in recipe names, one per line

Bad input exits with status 2 and one line on stderr naming the problem.

One concept (over 400 lines): the command line, one function per verb plus its argument parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import __version__, backend, codecs, provenance, synthetic
from .errors import KakeyaError

DEFAULT_BENCH_SPEC = "kakeya"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _rel_mse(x: np.ndarray, y: np.ndarray) -> float:
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    denom = float((x64**2).sum())
    return float(((x64 - y64) ** 2).sum() / denom) if denom > 0 else float(((x64 - y64) ** 2).sum())


def roundtrip(codec_spec: str, x: Any) -> tuple[dict[str, Any], Any]:
    """Encode and decode ``x`` once; return the report dict and the decoded array."""
    codec = codecs.get(codec_spec)
    t0 = time.perf_counter()
    blob = codec.encode(x)
    t1 = time.perf_counter()
    x_hat = codec.decode(blob, device="gpu" if backend.is_cupy_array(x) else "cpu")
    t2 = time.perf_counter()
    xh, yh = backend.to_host(x), backend.to_host(x_hat)
    n, d = xh.shape
    report = {
        "codec": codec.spec,
        "shape": [int(n), int(d)],
        "dtype": str(xh.dtype),
        "bytes": len(blob),
        "ratio_vs_bf16": codecs.ratio_vs_bf16(n, d, len(blob)),
        "rel_mse": _rel_mse(xh, yh),
        "encode_s": t1 - t0,
        "decode_s": t2 - t1,
        "ledger": codec.ledger(blob),
    }
    return report, x_hat


def _load_npy(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"input file {path!r} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise CliError(f"cannot read {path!r} as a .npy array without pickle: {exc}") from exc


def cmd_roundtrip(args: argparse.Namespace) -> int:
    x = _load_npy(args.input)
    report, x_hat = roundtrip(args.codec, x)
    if args.output:
        np.save(args.output, backend.to_host(x_hat), allow_pickle=False)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['codec']}: {report['bytes']} bytes, ratio {report['ratio_vs_bf16']:.3f}x vs bf16, "
              f"rel MSE {report['rel_mse']:.4g}, encode {report['encode_s']:.3f}s, decode {report['decode_s']:.3f}s")
        for name, nbytes in report["ledger"].items():
            print(f"  {name:<10} {nbytes:>12}")
    return 0


def cmd_codecs(args: argparse.Namespace) -> int:
    if args.markdown:
        from .codecs.reference import markdown_reference  # noqa: PLC0415  (only for this verb)

        out = Path(args.markdown)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(markdown_reference())
        except OSError as exc:
            raise CliError(f"cannot write the spec-key reference to {str(out)!r}: {exc.strerror or exc}") from exc
        print(out)
        return 0
    for name in codecs.names():
        codec = codecs.get(name)
        keys = [f"{f.name}={f.default}" for f in dataclasses.fields(codec.Params)]
        print(f"{name}: {', '.join(keys) if keys else '(no keys)'}")
    return 0


def bench(spec: str, rows: int, dims: Sequence[int], repeat: int, kind: str = "kv_like") -> list[dict[str, Any]]:
    """Time encode/decode of ``spec`` on synthetic [rows, D] blocks; MB/s of float32 input.

    The one-codec form of :func:`kakeya_lib.benchmark.run_suite` (kept for callers of the old API).
    """
    from . import benchmark  # noqa: PLC0415

    suite = benchmark.run_suite([spec], dims, [rows], repeat, [benchmark.synthetic_source(kind)],
                                device=backend.requested_device(), memory=False)
    if suite["errors"]:
        raise CliError(suite["errors"][0]["error"])
    return suite["results"]


def cmd_bench(args: argparse.Namespace) -> int:
    from . import benchmark  # noqa: PLC0415

    specs = list(args.codecs or []) + list(args.codec or []) or list(benchmark.DEFAULT_CODECS)
    benchmark.validate(specs, args.dims, args.rows, args.repeat)
    if args.forward_tokens < 1:
        raise CliError(f"--forward-tokens must be >= 1, got {args.forward_tokens}")
    for flag, value in (("--time-limit", args.time_limit), ("--max-time", args.max_time)):
        if value is not None and not value > 0:
            raise CliError(f"{flag} must be > 0 seconds, got {value}")
    sources = benchmark.parse_data(args.data, seed=args.seed)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    suite = benchmark.run_suite(specs, args.dims, args.rows, args.repeat, sources, device=args.device,
                                stages=not args.no_stages, memory=not args.no_memory,
                                time_limit=args.time_limit, max_time=args.max_time, log=log)
    forward, forward_error = None, None
    if args.forward:  # after the suite, so importing torch cannot disturb the codec timings
        from .llm import corpora  # noqa: PLC0415
        from .llm.models import load_model  # noqa: PLC0415

        try:
            loaded = load_model(args.forward_model)
            (passage,) = corpora.passages(args.forward_corpus, loaded.tokenizer, args.forward_tokens, 0, 1,
                                          seed=args.seed, bos=loaded.needs_bos)
            plans = []
            if args.forward_recipes:
                from .llm import recipes  # noqa: PLC0415
                from .llm.evaluate import resolve_for_model  # noqa: PLC0415

                helper = load_model(args.forward_model).model  # calibration patches its model; the timed one stays stock
                for name in args.forward_recipes:  # calibrated on the corpus's calib split (cached)
                    plans.append((name, resolve_for_model(recipes.load(name).plan(), helper,
                                                          corpus=args.forward_corpus, tokenizer=loaded.tokenizer,
                                                          ctx=1024, model_name=args.forward_model,
                                                          bos=loaded.needs_bos)))
            forward = benchmark.forward_overhead(loaded.model, passage.prefix_ids, specs, args.repeat, log=log,
                                                 plans=plans)
            forward.update(model=args.forward_model, corpus=args.forward_corpus, passage_id=passage.passage_id)
        except KakeyaError as exc:  # keep the suite's results: print and write them, then fail
            forward_error = exc
    print(benchmark.format_report(suite, forward))
    if args.json:
        meta = provenance.collect(command="bench", codecs=specs, rows=args.rows, dims=args.dims,
                                  repeat=args.repeat, max_time=args.max_time, data=args.data, device=args.device,
                                  seed=args.seed, forward_error=None if forward_error is None else str(forward_error))
        doc = benchmark.to_json(suite, meta, forward)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}")
    if forward_error is not None:
        raise forward_error
    if suite["errors"]:
        print(f"kakeya: error: {len(suite['errors'])} measurement(s) failed (listed above)", file=sys.stderr)
        return 1
    return 0


DEMO_SPECS = [
    "identity",
    "kakeya",
    "kakeya:bits=2",
    "kakeya:bits=4",
    "kakeya:pca=rsvd,rank=32",
    "kakeya:pca=rsvd,rank=32,outlier=2.0",
    "kakeya:share_basis=1",
    "kakeya:legacy_wht_scale=1",
    "kakeya:metric=ip,legacy_ip_norm=1",
]


def cmd_demo(args: argparse.Namespace) -> int:
    print(f"kakeya_lib {__version__}: codec demo on synthetic [{args.rows}, {args.dim}] float32 "
          "(ratios from real encoded bytes; rel MSE = ||x - x_hat||^2 / ||x||^2)\n")
    header = f"{'data':<9} {'codec':<38} {'bytes':>9} {'ratio':>7} {'rel MSE':>9} {'enc s':>7} {'dec s':>7}"
    print(header)
    print("-" * len(header))
    ledgers = {}
    for kind in ("kv_like", "gaussian"):
        x = synthetic.GENERATORS[kind](args.rows, args.dim, seed=args.seed)
        for spec in DEMO_SPECS:
            codecs.get(spec).encode(x[: min(64, args.rows)])  # warm-up: codebooks, caches
            r, _ = roundtrip(spec, x)
            ledgers[(kind, spec)] = r["ledger"]
            print(f"{kind:<9} {spec:<38} {r['bytes']:>9} {r['ratio_vs_bf16']:>6.2f}x {r['rel_mse']:>9.4f} "
                  f"{r['encode_s']:>7.3f} {r['decode_s']:>7.3f}")
    print("\nbyte ledger of the default spec 'kakeya' (bytes per component, sums to the blob):")
    for kind in ("kv_like", "gaussian"):
        parts = ", ".join(f"{name} {n}" for name, n in ledgers[(kind, "kakeya")].items())
        print(f"  {kind:<9} {parts}")
    return 0


def _load_llm(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """The model and the passages an LLM command asks for (imports torch lazily)."""
    from .llm import corpora, models  # noqa: PLC0415

    loaded = models.load_model(args.model)
    bos = loaded.needs_bos if args.bos == "auto" else args.bos == "yes"
    chosen = corpora.passages(args.corpus, loaded.tokenizer, args.ctx, getattr(args, "n_eval", 0),
                              args.passages, args.seed, split=args.split, bos=bos)
    return loaded, chosen


def _calibration_fields(args: argparse.Namespace) -> dict[str, Any]:
    """KVPlan fields from the --qprecond* / --calibrated-codebook flags."""
    skip = tuple(int(v) for v in args.qprecond_skip.split(",") if v.strip())
    return {"qprecond": args.qprecond, "qprecond_variant": args.qprecond_variant, "qprecond_skip": skip,
            "calibrated_codebook": args.calibrated_codebook}


def _calibration_kwargs(args: argparse.Namespace, loaded: Any, plans: list[Any]) -> dict[str, Any]:
    """What the harness needs to calibrate plans (corpus, tokenizer, calib passages)."""
    if any(p.needs_calibration for p in plans) and args.split == "calib":
        raise CliError("a plan calibrates on the calib split, so it cannot also be evaluated on it; use --split eval")
    bos = loaded.needs_bos if args.bos == "auto" else args.bos == "yes"
    return {"corpus": args.corpus, "tokenizer": loaded.tokenizer, "calib_passages": args.calib_passages,
            "calib_seed": args.calib_seed, "bos": bos}


def cmd_eval(args: argparse.Namespace) -> int:
    from .llm.evaluate import evaluate  # noqa: PLC0415
    from .llm.plan import KVPlan  # noqa: PLC0415

    if args.recipe:
        if (args.codec or args.k_codec or args.v_codec or args.boundary or args.protect_tokens or args.qprecond
                or args.calibrated_codebook):
            raise CliError("--recipe names the whole configuration; drop --codec/--k-codec/--v-codec/--boundary/"
                           "--protect-tokens/--qprecond/--calibrated-codebook")
        from .llm import recipes  # noqa: PLC0415

        plan = recipes.load(args.recipe).plan()
    else:
        if args.codec is None and args.k_codec is None:
            raise CliError("give --recipe NAME, --codec SPEC, or --k-codec SPEC (and optionally --v-codec SPEC)")
        k_spec = args.k_codec or args.codec
        v_spec = args.v_codec or args.codec or k_spec
        layers = None if args.layers is None else tuple(int(v) for v in args.layers.split(",") if v.strip())
        plan = KVPlan(k_spec, v_spec, boundary=args.boundary, boundary_k=args.boundary_k_codec,
                      boundary_v=args.boundary_v_codec, protect_tokens=args.protect_tokens, layers=layers,
                      **_calibration_fields(args))
    if plan.needs_calibration and args.split == "calib":
        raise CliError("the plan calibrates on the calib split, so it cannot also be evaluated on it; use --split eval")
    loaded, chosen = _load_llm(args)
    t0 = time.perf_counter()
    result = evaluate(loaded.model, [p.input_ids for p in chosen], args.ctx, plan,
                      progress=not args.no_progress, seed=args.seed, mode=args.mode,
                      block_tokens=args.block_tokens, hot_tokens=args.hot_tokens,
                      **_calibration_kwargs(args, loaded, [plan]))
    result["wall_seconds"] = time.perf_counter() - t0
    result["passage_ids"] = [p.passage_id for p in chosen]
    result["provenance"] = provenance.collect(
        command="eval", model=args.model, family=loaded.family, corpus=args.corpus, split=args.split,
        ctx=args.ctx, n_eval=args.n_eval, passages=args.passages, seed=args.seed, plan=plan.label, recipe=args.recipe,
        boundary=args.boundary, boundary_k=args.boundary_k_codec, boundary_v=args.boundary_v_codec,
        protect_tokens=args.protect_tokens, layers=args.layers, mode=args.mode, block_tokens=args.block_tokens, hot_tokens=args.hot_tokens,
        device="cpu (torch)",
    )
    lo, hi = result["delta_ppl_ci95"]
    print(f"{args.model} / {args.corpus}: K {result['k_codec']} | V {result['v_codec']}: "
          f"ppl {result['ppl_ref']:.4f} -> {result['ppl_codec']:.4f} (Δ {result['delta_ppl_pct']:+.3f} %, "
          f"95 % CI [{lo:+.3f}, {hi:+.3f}]), KL {result['kl_mean']:.5f}, top-1 {result['top1_pct']:.2f} %, "
          f"K rel MSE {result['k_rel_mse']:.4g}, V rel MSE {result['v_rel_mse']:.4g}, "
          f"ratio {result['ratio_vs_bf16']:.3f}x vs bf16 ({result['n_passages']} passages)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def cmd_cache_save(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from .llm import cache_file, models, recipes  # noqa: PLC0415
    from .llm.cache import CompressedCache  # noqa: PLC0415
    from .llm.evaluate import resolve_for_model  # noqa: PLC0415
    from .llm.prerope import patch_model  # noqa: PLC0415

    prompt = Path(args.prompt_file)
    if not prompt.is_file():
        raise CliError(f"prompt file {str(prompt)!r} does not exist")
    loaded = models.load_model(args.model)
    bos = loaded.needs_bos if args.bos == "auto" else args.bos == "yes"
    ids = loaded.tokenizer(prompt.read_text(), add_special_tokens=False)["input_ids"]
    if bos:
        ids = [loaded.tokenizer.bos_token_id, *ids]
    if len(ids) < 2:
        raise CliError(f"the prompt has {len(ids)} token(s); a cache needs at least 2 (the last one starts generation)")
    model = loaded.model
    patch_model(model)
    plan = resolve_for_model(recipes.load(args.recipe).plan(), model, corpus=args.corpus, tokenizer=loaded.tokenizer,
                        ctx=args.calib_ctx, n_passages=args.calib_passages, seed=args.calib_seed, bos=bos,
                        model_name=args.model)
    cache = CompressedCache.for_prompt(model.config, plan, len(ids) - 1, hot_tokens=args.hot_tokens,
                                       block_tokens=args.block_tokens)
    t0 = time.perf_counter()
    with torch.no_grad():
        model(torch.tensor([ids[:-1]]), cache=cache)
    seconds = time.perf_counter() - t0
    size = cache.save(args.out, model=args.model, token_ids=ids)
    bf16 = cache_file.bf16_reference_bytes(model.config, len(ids) - 1)
    print(f"{args.out}: {len(ids) - 1} prompt tokens cached with {args.recipe}, {size:,} bytes "
          f"({bf16 / size:.2f}x smaller than the bf16 cache of {bf16:,} bytes); prefill + coding {seconds:.2f} s")
    return 0


def _keep_decoded(text: str) -> int | None:
    """``all`` -> None (every block kept decoded), else a non-negative block count."""
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 'all' or a non-negative number of blocks, got {text!r}")
    return int(text)


def cmd_cache_generate(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415

    from .llm import cache_file, models  # noqa: PLC0415
    from .llm.cache import CompressedCache  # noqa: PLC0415
    from .llm.prerope import patch_model  # noqa: PLC0415

    header, _ = cache_file.read_header(args.cache)
    name = args.model or header["model"]
    loaded = models.load_model(name)
    model = loaded.model
    patch_model(model)
    t0 = time.perf_counter()
    restored = CompressedCache.load(args.cache, model, keep_decoded=args.keep_decoded)
    t_load = time.perf_counter() - t0
    cached = restored.cache.get_seq_length()
    ids = torch.tensor([restored.token_ids])
    if ids.shape[1] == cached:
        raise CliError("the file caches every prompt token; generation needs the last one uncached (save with "
                       "`kakeya cache save`, which leaves it out)")
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, cache=restored.cache, max_new_tokens=args.max_new_tokens, do_sample=False,
                             pad_token_id=loaded.tokenizer.eos_token_id)
    t_gen = time.perf_counter() - t0
    new = out[0, ids.shape[1]:].tolist()
    print(loaded.tokenizer.decode(new))
    print(f"[{name}: {cached} cached tokens loaded in {t_load:.3f} s; {len(new)} new tokens "
          f"in {t_gen:.2f} s]", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": name, "cached_tokens": cached,
                                               "new_token_ids": new, "load_seconds": t_load,
                                               "generate_seconds": t_gen}, indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep  # noqa: PLC0415
    from .paths import RESULTS_DIR  # noqa: PLC0415
    from .store import Store  # noqa: PLC0415

    plan = sweep.combine([sweep.load(f) for f in args.file])
    root = Path(args.store) if args.store else RESULTS_DIR
    if args.list:
        store = Store(root)
        for t in plan.tasks:
            print(f"{'done   ' if store.has(t.cell) else 'pending'}  {t.cell.relpath}")
        return 0
    if args.executor == "local":
        if args.scheduler:
            raise CliError("--scheduler needs --executor dask")
        outcomes = sweep.run_local(plan, root, args.force, progress=not args.no_progress)
    else:
        outcomes = sweep.run_dask(plan, root, args.force, scheduler=args.scheduler, n_workers=args.workers,
                                  progress=not args.no_progress)
    summary = sweep.summarise(plan, outcomes, root)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary["counts"].items()))
    print(f"sweep {plan.name}: {summary['cells']} cells ({counts})")
    for f in summary["failures"]:
        print(f"  FAILED {f['cell']}: {f['error'].splitlines()[0]}")
    return 1 if summary["failures"] else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .llm import models, qprecond  # noqa: PLC0415

    loaded = models.load_model(args.model)
    bos = loaded.needs_bos if args.bos == "auto" else args.bos == "yes"
    qp = qprecond.calibrate_on_corpus(loaded.model, loaded.tokenizer, args.corpus, args.ctx,
                                      n_passages=args.passages, seed=args.seed, bos=bos, variant=args.variant,
                                      ridge=args.ridge, model_name=args.model,
                                      refresh=args.refresh, progress=not args.no_progress)
    print(qp.describe())
    print(f"artifact: {qp.name} (in {qprecond.calib_dir()})")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .llm import recipes  # noqa: PLC0415

    for name in recipes.names():
        print(name)
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from .llm.capture import capture_to_disk  # noqa: PLC0415

    loaded, chosen = _load_llm(args)
    meta = {"model": args.model, "family": loaded.family, "corpus": args.corpus, "split": args.split,
            "ctx": args.ctx, "seed": args.seed}
    files = capture_to_disk(loaded.model, chosen, Path(args.out), meta)
    print(f"wrote {len(files)} passages of pre-RoPE K/V/Q to {args.out}")
    return 0


def _add_llm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="packaged name, HF id or local folder")
    p.add_argument("--corpus", default="sotu", help="sotu | wiki | wikitext-103 | a local path")
    p.add_argument("--split", choices=["eval", "calib"], default="eval")
    p.add_argument("--ctx", type=int, default=1024, help="prefix tokens per passage")
    p.add_argument("--passages", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bos", choices=["auto", "yes", "no"], default="auto", help="prepend BOS to every passage")


def _add_calibration_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qprecond", help="whiten keys with Σ_q: 'calib' (calibrate on the calib split, cached), "
                   "an artifact name in .cache/calib, or a path")
    p.add_argument("--qprecond-variant", choices=["plain", "rope"], default="plain",
                   help="plain pre-RoPE Σ_q (the seed's) or Σ_q averaged over relative RoPE offsets")
    p.add_argument("--qprecond-skip", default="0", help="layers never whitened (comma-separated, negative = from the end)")
    p.add_argument("--calibrated-codebook", action="store_true",
                   help="fit the kakeya specs' Lloyd–Max tables on calib-split data")
    p.add_argument("--calib-passages", type=int, default=8, help="calib-split passages for calibration")
    p.add_argument("--calib-seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kakeya", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"kakeya_lib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("roundtrip", help="encode + decode a .npy array and report bytes and error")
    p.add_argument("--codec", required=True, help="codec spec, e.g. kakeya:bits=3,pca=rsvd,rank=32")
    p.add_argument("--input", required=True, help="2-D float .npy file [N, D]")
    p.add_argument("--output", help="write the decoded array here (.npy)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_roundtrip)

    p = sub.add_parser("codecs", help="list registered codecs and their spec keys")
    p.add_argument("--markdown", metavar="PATH", help="write the spec-key reference page (markdown) here instead")
    p.set_defaults(func=cmd_codecs)

    p = sub.add_parser("bench", help="codec encode/decode throughput, scaling and memory (the speed suite)",
                       description="Times encode and decode of every codec spec on [N, D] float32 blocks for "
                       "each data kind, D and N; prints the table and writes tidy JSON (see benchmarks/README.md).")
    p.add_argument("--codecs", nargs="+", metavar="SPEC",
                   help="codec specs (default: one per registered codec, the default kakeya spec first)")
    p.add_argument("--codec", action="append", metavar="SPEC", help=argparse.SUPPRESS)  # old single-spec form
    p.add_argument("--dims", type=int, nargs="+", default=[64, 128, 256], metavar="D")
    p.add_argument("--rows", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384, 32768, 65536],
                   metavar="N")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median reported)")
    p.add_argument("--data", nargs="+", default=["kv_like"], metavar="KIND",
                   help="kv_like | gaussian | captured FILE.npz (several allowed; captured rows keep the "
                   "file's D and are tiled to N)")
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu",
                   help="numpy on the CPU or CuPy on the GPU (gpu without CuPy is an error)")
    p.add_argument("--seed", type=int, default=0, help="synthetic data and forward-pass passage seed")
    p.add_argument("--forward", action="store_true",
                   help="also time a prefill of the model on --forward-tokens tokens against the codec time "
                   "for all the K/V rows it produces (CPU)")
    p.add_argument("--forward-model", default="smollm2-135m")
    p.add_argument("--forward-corpus", default="sotu")
    p.add_argument("--forward-tokens", type=int, default=1024)
    p.add_argument("--forward-recipes", nargs="*", default=[], metavar="RECIPE",
                   help="with --forward, also whole-cache recipes (per-layer codecs, calibrated on the corpus's "
                   "calib split), e.g. ours-klt")
    p.add_argument("--no-memory", action="store_true", help="skip the untimed peak-memory pass")
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage timers")
    p.add_argument("--time-limit", type=float, help="seconds; measurements not started by then are skipped")
    p.add_argument("--max-time", type=float,
                   help="seconds per measurement: stop its timed runs early once they add up to this (>= 1 run)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", help="also write the tidy results (+ provenance) to this JSON file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="end-to-end quality of a codec on a language model")
    _add_llm_arguments(p)
    p.add_argument("--recipe", help="a built-in recipe name or a recipe YAML file (see `kakeya recipes`)")
    p.add_argument("--codec", help="codec spec for K and V")
    p.add_argument("--k-codec", help="codec spec for K (overrides --codec)")
    p.add_argument("--v-codec", help="codec spec for V (overrides --codec)")
    p.add_argument("--n-eval", type=int, default=64, help="continuation tokens scored per passage")
    p.add_argument("--layers", help="comma-separated layers to compress (default: all full-attention layers)")
    p.add_argument("--boundary", type=int, default=0,
                   help="first and last N compressed layers are boundary layers (uncompressed unless --boundary-k-codec)")
    p.add_argument("--boundary-k-codec", help="codec spec for boundary layers' K (default: uncompressed)")
    p.add_argument("--boundary-v-codec", help="codec spec for boundary layers' V (default: as K)")
    p.add_argument("--protect-tokens", type=int, default=0, help="leading tokens kept exact (attention sink)")
    p.add_argument("--mode", choices=["roundtrip", "cache"], default="roundtrip")
    p.add_argument("--block-tokens", type=int, default=512, help="cache mode: tokens per encoded block")
    p.add_argument("--hot-tokens", type=int, default=128, help="cache mode: newest tokens kept in float")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", help="write the full result here")
    _add_calibration_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="calibrate (and cache) a query-whitening (second-moment) artifact")
    _add_llm_arguments(p)
    p.add_argument("--variant", choices=["plain", "rope"], default="plain")
    p.add_argument("--ridge", type=float, default=1e-3, help="Σ + ridge·mean(diag Σ)·I")
    p.add_argument("--refresh", action="store_true", help="recompute even if the artifact exists")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("recipes", help="list the built-in recipes")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("capture", help="save pre-RoPE K/V/Q of passages (safetensors + JSON)")
    _add_llm_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("sweep", help="run a YAML grid of end-to-end cells into the results store (local or Dask)",
                       description="Expands sweep files into cells (models x corpora x sizes x analyses), skips "
                       "cells already in the store, and runs the rest in-process or on a Dask cluster.")
    p.add_argument("file", nargs="+", help="sweep YAML file(s) (e.g. sweeps/paper-main.yaml); several run as one "
                   "sweep, each cell once")
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (default: start a LocalCluster)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--force", action="store_true", help="recompute cells whose results exist")
    p.add_argument("--store", help="results store root (default data/results)")
    p.add_argument("--list", action="store_true", help="print the cells and whether they are done; run nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("cache", help="store a prompt's compressed cache in a file, and generate from it")
    cache_sub = p.add_subparsers(dest="cache_command", required=True)
    q = cache_sub.add_parser("save", help="prefill a prompt into a compressed cache and write it to one file")
    q.add_argument("--model", default="smollm2-135m", help="packaged name, HF id or local folder")
    q.add_argument("--prompt-file", required=True, help="text file with the prompt")
    q.add_argument("--recipe", default="ours-klt", help="a built-in recipe name or a recipe YAML file")
    q.add_argument("--out", required=True, help="the cache file to write (e.g. prompt.kvz)")
    q.add_argument("--block-tokens", type=int, help="tokens per encoded block (default: the whole prompt beyond "
                   "the protected and hot tokens, one block, as the paper's protocol codes a prefix)")
    q.add_argument("--hot-tokens", type=int, default=0, help="newest prompt tokens kept in bf16")
    q.add_argument("--bos", choices=["auto", "yes", "no"], default="auto", help="prepend BOS to the prompt")
    q.add_argument("--corpus", default="sotu", help="calibration corpus of recipes that calibrate (its calib split)")
    q.add_argument("--calib-ctx", type=int, default=1024, help="tokens per calibration passage")
    q.add_argument("--calib-passages", type=int, default=8)
    q.add_argument("--calib-seed", type=int, default=0)
    q.set_defaults(func=cmd_cache_save)
    q = cache_sub.add_parser("generate", help="load a cache file and continue its prompt greedily")
    q.add_argument("--cache", required=True, help="a file written by `kakeya cache save`")
    q.add_argument("--model", help="the model to load (default: the one the file names)")
    q.add_argument("--max-new-tokens", type=int, default=32)
    q.add_argument("--keep-decoded", default=None, type=_keep_decoded, metavar="all|N",
                   help="blocks per layer kept decoded as floats: 'all' (each decoded once) or a number (0: decode "
                   "every block on every step, least memory)")
    q.add_argument("--json", help="also write the new token ids and timings here")
    q.set_defaults(func=cmd_cache_generate)

    p = sub.add_parser("demo", help="codec table on synthetic data (make demo)")
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (KakeyaError, CliError) as exc:
        print(f"kakeya: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
