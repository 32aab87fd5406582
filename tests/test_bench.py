"""The speed suite (`kakeya bench`, kakeya_lib.benchmark) at tiny sizes: rows for every codec, D
and N, positive throughput, JSON with provenance, scaling fits, stage rows, captured rows, the
prefill comparison, bad arguments, no per-vector Python loop, and the GPU check script's syntax.
Nothing here asserts a speed: the figures are benchmarks (`make bench`), not tests."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kakeya_lib import backend, benchmark, cli, codecs, synthetic
from kakeya_lib.llm import recipes
from kakeya_lib.paths import REPO_ROOT

DIMS = [32, 64]
ROWS = [128, 256]


@pytest.fixture(scope="module")
def suite():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(backend.DEVICE_ENV, "cpu")
        return benchmark.run_suite(benchmark.DEFAULT_CODECS, DIMS, ROWS, repeat=1, device="cpu")


def run_cli(args, capsys):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_codecs_cover_the_registry():
    # kvtc and klt need a per-model calibration artifact (fitted on a real model's K/V), so they are
    # timed on real captures only, not in the synthetic suite.
    names = {codecs.get(s).name for s in benchmark.DEFAULT_CODECS}
    calibrated = {n for n in codecs.names() if getattr(codecs.get(n), "needs_calibration", False)}
    assert calibrated == {"kvtc", "klt"} and names == set(codecs.names()) - calibrated
    assert benchmark.DEFAULT_CODECS[0] == "kakeya"
    # the second is our recipe's K spec, written out so the suite's spec list reads as data
    assert codecs.get(benchmark.DEFAULT_CODECS[1]).spec == codecs.get(recipes.load("ours-5x").plan().k).spec


def test_a_row_for_every_codec_dim_and_n(suite):
    assert not suite["errors"] and not suite["skipped"]
    got = {(r["codec"], r["dim"], r["rows"]) for r in suite["results"]}
    want = {(codecs.get(s).spec, d, n) for s in benchmark.DEFAULT_CODECS for d in DIMS for n in ROWS}
    assert got == want
    for r in suite["results"]:
        assert r["encode_MBps"] > 0 and r["decode_MBps"] > 0
        assert r["encode_vps"] == pytest.approx(r["rows"] / r["encode_s"])
        assert r["encode_MBps"] == pytest.approx(r["rows"] * r["dim"] * 4 / 1e6 / r["encode_s"])
        assert r["ratio_vs_bf16"] == pytest.approx(2 * r["rows"] * r["dim"] / r["bytes"])
        assert r["peak_encode_MB"] >= 0 and r["peak_decode_MB"] >= 0 and r["peak_memory_method"] == "tracemalloc"
        assert r["backend"] == "numpy" and r["data"] == "kv_like" and not r["tiled"]
        assert 0 <= r["rel_mse"] < 1
    ident = [r for r in suite["results"] if r["codec"] == "identity"]
    assert all(r["rel_mse"] == 0 for r in ident)


def test_stage_rows_only_for_kakeya_specs(suite):
    staged = {r["codec"] for r in suite["stages"]}
    kakeya_specs = {codecs.get(s).spec for s in benchmark.DEFAULT_CODECS if s.startswith("kakeya")}
    assert staged == kakeya_specs
    for r in suite["stages"]:
        assert r["MBps"] > 0 and 0 < r["share"] <= 1 and r["stage"].startswith(r["op"] + "/")
    names = {r["stage"] for r in suite["stages"]}
    assert {"encode/skeleton", "encode/kmeans", "encode/quantize", "decode/unpack", "decode/rotate"} <= names
    assert "encode/entropy" in names and "decode/entropy" in names  # the recipe K spec's rANS stage
    by_op = {}
    for r in suite["stages"]:
        key = (r["codec"], r["dim"], r["rows"], r["op"])
        by_op[key] = by_op.get(key, 0) + r["share"]
    assert all(total <= 1.0 + 1e-6 for total in by_op.values())  # stages nest inside the op's time


def test_scaling_exponent_from_two_sizes(suite):
    fits = suite["scaling"]
    n_fits = {(f["codec"], f["dim"], f["op"]) for f in fits if f["axis"] == "N"}
    assert n_fits == {(codecs.get(s).spec, d, op) for s in benchmark.DEFAULT_CODECS for d in DIMS
                      for op in ("encode", "decode")}
    assert all(math.isfinite(f["exponent"]) and f["points"] == 2 for f in fits)
    assert any(f["axis"] == "D" for f in fits)


def test_fit_power_law_recovers_the_exponent():
    a, b = benchmark.fit_power_law([512, 1024, 4096], [2.0 * n**1.5 for n in (512, 1024, 4096)])
    assert b == pytest.approx(1.5) and a == pytest.approx(2.0)
    assert benchmark.fit_power_law([512, 512], [1.0, 2.0]) is None


def test_targets_pass_and_fail():
    ours = codecs.get(benchmark.TARGETS["cpu"]["spec"]).spec
    row = {"codec": ours, "data": "kv_like", "rows": 4096, "dim": 128, "encode_MBps": 210.0, "decode_MBps": 150.0}
    got = {t["op"]: t["pass"] for t in benchmark.check_targets([row], "cpu")}
    assert got == {"encode": True, "decode": False}
    assert benchmark.check_targets([{**row, "rows": 2048}], "cpu") == []
    assert benchmark.check_targets([{**row, "codec": "kakeya"}], "cpu") == []  # another spec: no target
    gpu = benchmark.check_targets([{**row, "codec": "kakeya", "rows": 65536, "encode_MBps": 25_000.0, "decode_MBps": 120_000.0}], "gpu")
    assert [t["pass"] for t in gpu] == [True, True]


def test_cli_prints_the_table_and_writes_tidy_json(tmp_path, capsys):
    dest = tmp_path / "bench" / "out.json"
    code, out, err = run_cli(["bench", "--codecs", "kakeya", "identity", "--dims", 32, "--rows", 128, 256,
                              "--repeat", 1, "--json", dest], capsys)
    assert code == 0, err
    assert "enc MB/s" in out and "dec MB/s" in out and "vec/s" in out and "peak MB" in out
    assert "stages of kakeya" in out and "scaling:" in out
    assert "kv_like" in err  # progress lines on stderr
    doc = json.loads(dest.read_text())
    assert {"provenance", "results", "stages", "scaling", "targets", "errors", "skipped", "forward"} <= set(doc)
    prov = doc["provenance"]
    assert prov["command"] == "bench" and "git" in prov and "versions" in prov and prov["device"] == "cpu"
    assert len(doc["results"]) == 4 and doc["forward"] is None
    assert all(isinstance(r["encode_s_all"], list) for r in doc["results"])


def test_old_single_codec_form_still_works(capsys):
    rows = cli.bench("identity", 64, [16], 1)
    assert len(rows) == 1 and rows[0]["codec"] == "identity" and rows[0]["encode_MBps"] > 0
    code, out, _ = run_cli(["bench", "--codec", "identity", "--rows", 64, "--dims", 16, "--repeat", 1, "--quiet"], capsys)
    assert code == 0 and "identity" in out and "kakeya" not in out


def test_time_limit_and_max_time():
    s = benchmark.run_suite(["identity"], [16], [64], repeat=50, max_time=1e-9, memory=False)
    assert s["results"][0]["repeat"] == 1  # one timed run at least, then the cap
    s = benchmark.run_suite(["identity", "kakeya"], [16], [64, 128], repeat=1, time_limit=1e-9)
    assert s["results"] == [] and len(s["skipped"]) == 4


@pytest.mark.parametrize(
    "args,message",
    [
        (["--codecs", "nope"], "unknown codec"),
        (["--codecs", "kakeya:bits=99"], "bits"),
        (["--rows", 0], "rows must be positive"),
        (["--dims", -4], "dims must be positive"),
        (["--repeat", 0], "repeat must be >= 1"),
        (["--data", "uniform"], "unknown data kind"),
        (["--data", "captured"], "needs a file"),
        (["--data", "captured", "/nonexistent/kv.npz"], "does not exist"),
        (["--time-limit", 0], "--time-limit must be > 0"),
        (["--forward-tokens", 0], "--forward-tokens"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    code, out, err = run_cli(["bench", "--rows", 64, "--dims", 16, "--repeat", 1, "--quiet", *args], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_bad_device_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--device", "tpu"])
    assert exc.value.code == 2
    if not backend.gpu_available():
        code, _, err = run_cli(["bench", "--device", "gpu", "--rows", 64, "--dims", 16, "--repeat", 1], capsys)
        assert code == 2 and ("CuPy" in err or "CUDA" in err)


def test_a_failing_codec_is_recorded_and_the_suite_goes_on(capsys):
    # besicovitch:g=3 does not divide D=16: that shape fails, the other codec is still measured
    s = benchmark.run_suite(["besicovitch:g=3", "identity"], [16], [64], repeat=1, memory=False)
    assert [r["codec"] for r in s["results"]] == ["identity"]
    assert len(s["errors"]) == 1 and s["errors"][0]["codec"] == "besicovitch:g=3"
    assert "failed" in benchmark.format_report(s)


def _fake_capture(n_layers=3, heads=2, tokens=40, dim=16):
    rng = np.random.default_rng(0)
    return {f"layer{i}.{s}": rng.standard_normal((heads, tokens, dim)).astype(np.float32)
            for i in range(n_layers) for s in ("k", "v", "q")}


def test_captured_rows_save_load_and_bench(tmp_path, capsys):
    tensors = _fake_capture()
    path = tmp_path / "kv.npz"
    info = benchmark.save_captured(tensors, path, layers=[0, -1], meta={"model": "fake"})
    assert info["layers"] == [0, 2] and info["shapes"]["layer0.k"] == [80, 16]
    with np.load(path, allow_pickle=False) as z:  # no pickle needed anywhere
        assert sorted(z.files) == ["layer0.k", "layer0.v", "layer2.k", "layer2.v", "meta"]
        assert z["layer0.k"].dtype == np.float16
    streams, meta = benchmark.load_captured(path)
    assert meta["model"] == "fake" and streams["k"].shape == (160, 16) and streams["k"].dtype == np.float32
    # token-major, heads interleaved: row t*H + h is head h at token t
    k0 = tensors["layer0.k"]
    np.testing.assert_allclose(streams["k"][2 * 7 + 1], k0[1, 7], atol=1e-2)
    code, out, err = run_cli(["bench", "--codecs", "kakeya", "identity", "--data", "captured", path, "kv_like",
                              "--dims", 8, "--rows", 64, 256, "--repeat", 1, "--no-memory", "--quiet"], capsys)
    assert code == 0, err
    s = benchmark.run_suite(["identity"], [8], [64, 256], 1, benchmark.parse_data(["captured", str(path)]), memory=False)
    assert {(r["data"], r["dim"], r["rows"], r["tiled"]) for r in s["results"]} == {
        ("captured:kv:k", 16, 64, False), ("captured:kv:k", 16, 256, True),
        ("captured:kv:v", 16, 64, False), ("captured:kv:v", 16, 256, True),
    }
    assert "captured:kv:k" in out and "kv_like" in out


def test_captured_file_without_rows_or_pickled_is_rejected(tmp_path):
    np.savez(tmp_path / "empty.npz", meta=np.array("{}"))
    with pytest.raises(Exception, match="no layer"):
        benchmark.load_captured(tmp_path / "empty.npz")
    np.savez(tmp_path / "obj.npz", **{"layer0.k": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(Exception, match="pickle"):
        benchmark.load_captured(tmp_path / "obj.npz")


def test_forward_overhead_counts_every_kv_row_of_the_prefill():
    pytest.importorskip("transformers")
    from kakeya_lib.llm.models import tiny_model

    model = tiny_model("llama")  # 2 layers, 2 KV heads, head_dim 16
    tokens = list(np.random.default_rng(0).integers(0, 96, size=24))
    res = benchmark.forward_overhead(model, tokens, ["identity", "kivi:bits=4"], repeat=1)
    assert res["tokens"] == 24 and res["forward_s"] > 0
    by_codec = {r["codec"]: r for r in res["results"]}
    assert set(by_codec) == {"identity", "kivi:bits=4,heads=2"}  # head-grouped codecs get the model's heads
    for r in res["results"]:
        assert r["rows_total"] == 24 * 2 * 2 * 2 and r["arrays"] == 4 and r["head_dim"] == 16
        assert r["encode_overhead_pct"] == pytest.approx(100 * r["encode_s"] / res["forward_s"])
        assert r["roundtrip_overhead_pct"] > r["encode_overhead_pct"] > 0
    text = benchmark.format_report(benchmark.run_suite(["identity"], [16], [32], 1, memory=False), res)
    assert "prefill of 24 tokens" in text


def test_forward_overhead_of_a_whole_cache_plan_uses_each_layers_codecs():
    pytest.importorskip("transformers")
    from kakeya_lib.llm.models import tiny_model
    from kakeya_lib.llm.plan import KVPlan, resolve_plan

    model = tiny_model("llama")
    tokens = list(np.random.default_rng(0).integers(0, 96, size=24))
    spec = "kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1"
    plan = resolve_plan(KVPlan(spec, layers=(1,), k_step_scale=(1.0, 2.0)), config=model.config)  # layer 0 stays bf16
    res = benchmark.forward_overhead(model, tokens, [], repeat=1, plans=[("mine", plan)])
    (row,) = res["results"]
    assert row["codec"] == "mine" and row["arrays"] == 4 and row["encode_s"] > 0
    one_layer = benchmark.forward_overhead(tiny_model("llama"), tokens, [spec], repeat=1)["results"][0]  # (capture patched the first)
    bf16_layer0 = 2 * 2 * 24 * 2 * 16  # K and V of layer 0 at 2 bytes
    assert bf16_layer0 < row["bytes"] < one_layer["bytes"] + bf16_layer0
    # a plan with token saliency hands its codecs the last queries' attention on each row
    from kakeya_lib.codecs.base import Codec

    seen = []
    encode = Codec.encode

    def spy(self, x, weights=None):
        seen.append(None if weights is None else np.asarray(weights).copy())
        return encode(self, x, weights)

    weighted = resolve_plan(KVPlan(spec, layers=(1,), saliency_queries=4), config=model.config)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Codec, "encode", spy)
        (wrow,) = benchmark.forward_overhead(tiny_model("llama"), tokens, [], repeat=1,
                                             plans=[("weighted", weighted)])["results"]
    assert wrow["encode_s"] > 0 and seen and all(w is not None and w.shape == (24 * 2,) for w in seen)
    assert np.ptp(seen[0]) > 0 and np.array_equal(seen[0], seen[1])  # per token and head; K and V alike


# Single-block variants: a per-block loop is allowed, a per-vector one is not.
_ONE_BLOCK = {"kakeya": "block=4096", "besicovitch": "block=4096", "fp8": "block=4096"}


def _one_block(spec: str) -> str:
    name = spec.split(":")[0]
    if name not in _ONE_BLOCK:
        return spec
    keys = [kv for kv in spec.partition(":")[2].split(",") if kv and not kv.startswith("block=")]
    return f"{name}:{','.join(keys + [_ONE_BLOCK[name]])}"


def _python_calls(codec, x) -> int:
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(prof)
    try:
        codec.decode(codec.encode(x), device="cpu")
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("spec", benchmark.DEFAULT_CODECS)
def test_no_per_vector_python_loop(spec, monkeypatch):
    """16x the rows in one block must not take ~16x the Python calls (rANS steps grow ~sqrt)."""
    monkeypatch.setenv(backend.DEVICE_ENV, "cpu")
    codec = codecs.get(_one_block(spec))
    x = synthetic.kv_like(4096, 32, seed=0)
    codec.decode(codec.encode(x[:64]), device="cpu")  # warm caches
    small, large = _python_calls(codec, x[:256]), _python_calls(codec, x)
    assert large / small < 6.0, f"{codec.spec}: {small} Python calls for 256 rows, {large} for 4096"


def test_gpu_check_script_is_valid_bash():
    script = REPO_ROOT / "scripts" / "gpu_check.sh"
    assert script.is_file()
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    proc = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = script.read_text()
    assert "set -euo pipefail" in text and "--no-index" in text and "pytest" in text and "$OUT" in text


def test_benchmark_scripts_parse():
    for name in ("capture_kv.py", "gpu_parity.py", "report.py", "cache_memory.py"):
        compile(Path(REPO_ROOT / "benchmarks" / name).read_text(), name, "exec")


def test_report_renders_markdown(tmp_path, capsys):
    dest = tmp_path / "b.json"
    assert cli.main(["bench", "--codecs", "kakeya", "identity", "--dims", "32", "--rows", "128", "256",
                     "--repeat", "1", "--quiet", "--json", str(dest)]) == 0
    capsys.readouterr()
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import report  # noqa: PLC0415
    finally:
        sys.path.pop(0)
    md = report.render(str(dest))
    assert "| `kakeya` | kv_like |" in md and "Scaling exponent" in md


def test_book_page_reads_every_bench_file_and_names_what_is_missing(tmp_path, capsys):
    from kakeya_lib.benchmark.report import BOOK_CODEC_FILES, bench_page

    src = tmp_path / "one.json"
    assert cli.main(["bench", "--codecs", "identity", "--dims", "32", "--rows", "128", "--repeat", "1", "--quiet",
                     "--json", str(src)]) == 0
    capsys.readouterr()
    with pytest.raises(FileNotFoundError, match="codec_cpu_kv_like.json.*make bench"):
        bench_page(tmp_path)
    for name in BOOK_CODEC_FILES:
        (tmp_path / name).write_text(src.read_text())
    page = bench_page(tmp_path)
    assert page.count("| `identity` | kv_like |") == len(BOOK_CODEC_FILES)
    assert "load average at start" in page  # the provenance line says how busy the machine was
    assert "Not measured on this tree yet: `.venv/bin/python benchmarks/prompt_cache.py`" in page
    (tmp_path / "prompt_cache.json").write_text(json.dumps({
        "provenance": {"model": "m", "corpus": "c", "recipe": "r", "new_tokens": 4, "repeat": 1, "command": "x",
                       "git": {"sha": "abc", "dirty": False}},
        "results": [{"kind": "storage", "cached_tokens": 8, "label": "r", "file_bytes": 1e6, "bf16_dump_bytes": 4e6,
                     "ratio_vs_bf16_dump": 4.0},
                    {"kind": "first_token", "cached_tokens": 8, "label": "r", "recompute_s": 1.0, "from_file_s": 0.5,
                     "speedup": 2.0}]}))
    page = bench_page(tmp_path)
    assert "| 8 | r | 1.00 MB | 4.00 MB | 4.00x | 1.000 s | 0.500 s | 2.0x |" in page


# -- GPU (run by scripts/gpu_check.sh; skipped cleanly without CuPy and a device) ----------------
gpu = pytest.mark.skipif(not backend.gpu_available(), reason="CuPy with a usable CUDA device is not available")


@pytest.mark.gpu
@gpu
def test_gpu_suite_reports_bandwidth_and_pool_memory():
    s = benchmark.run_suite(["identity", "kakeya"], [64], [1024], repeat=2, device="gpu")
    assert not s["errors"] and s["bandwidth_Bps"]
    for r in s["results"]:
        assert r["backend"] == "cupy" and r["encode_bw_fraction"] > 0 and r["decode_bw_fraction"] > 0
        assert r["peak_memory_method"].startswith("cupy")
    assert {r["codec"] for r in s["stages"]} == {"kakeya"}


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("spec", benchmark.DEFAULT_CODECS)
def test_gpu_decode_matches_cpu_for_bench_specs(spec, monkeypatch):
    cp = backend.cupy_or_raise()
    monkeypatch.setenv(backend.DEVICE_ENV, "auto")
    x = synthetic.kv_like(4096, 128, seed=0)
    codec = codecs.get(spec)
    blob_cpu, blob_gpu = codec.encode(x), codec.encode(cp.asarray(x))
    if codec.name == "identity":
        assert blob_cpu == blob_gpu
    scale = float(np.abs(x).max())
    y_cc = codec.decode(blob_cpu, device="cpu")
    np.testing.assert_allclose(codec.decode(blob_cpu, device="gpu").get(), y_cc, atol=1e-4 * scale, rtol=0)
    y_gg = codec.decode(blob_gpu, device="gpu").get()
    np.testing.assert_allclose(codec.decode(blob_gpu, device="cpu"), y_gg, atol=1e-4 * scale, rtol=0)


def test_prompt_cache_benchmark_rows_and_tables_on_a_tiny_model():
    import torch

    from kakeya_lib.benchmark.prompt_cache import prompt_cache_rows
    from kakeya_lib.benchmark.report import prompt_cache_markdown
    from kakeya_lib.llm.models import tiny_model
    from kakeya_lib.llm.plan import KVPlan, resolve_plan
    from kakeya_lib.llm.prerope import patch_model

    model = tiny_model("llama")
    stock = tiny_model("llama")  # same seed, same weights, not patched
    patch_model(model)
    ids = torch.randint(0, 96, (201,), generator=torch.Generator().manual_seed(0)).tolist()
    plan = resolve_plan(KVPlan("kakeya:pca=none,bits=5,quant=uniform,step=0.6,entropy=1,block=64", protect_tokens=1),
                        config=model.config)
    rows = prompt_cache_rows(model, ids, plan, label="tiny", block_tokens=32, hot_tokens=8, new_tokens=6, repeat=1,
                             budgets=(0, 1, None), stock_model=stock)
    kinds = [r["kind"] for r in rows]
    assert kinds == ["storage", "first_token"] + ["generate"] * 5
    stock_row, prerope_row = rows[2], rows[3]
    assert stock_row["reference"] and stock_row["relative_speed"] == 1.0 and not prerope_row["reference"]
    assert prerope_row["same_tokens_as_float"]  # the patched model's arithmetic is the stock model's
    generated = [r for r in rows if r["kind"] == "generate"]
    assert all(r["steady_tokens_per_s"] > 0 and r["steady_relative_speed"] > 0 for r in generated)
    assert stock_row["steady_relative_speed"] == 1.0
    storage = rows[0]
    assert storage["cached_tokens"] == 200 and 0 < storage["file_bytes"] < storage["bf16_dump_bytes"]
    assert storage["bf16_kv_bytes"] <= storage["bf16_dump_bytes"]  # the dump adds only its header
    gen = {r["keep_decoded"]: r for r in rows if r["kind"] == "generate" and r["cache"] == "compressed"}
    assert all(r["same_tokens_as_float"] in (True, False) for r in gen.values())
    assert gen[0]["transient_decode_bytes"] > 0 and gen[None]["memory_bytes"] > gen[0]["memory_bytes"]
    table = prompt_cache_markdown(rows)
    assert "| 200 | tiny |" in table and "| 200 | compressed | all |" in table
