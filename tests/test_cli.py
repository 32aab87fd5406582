"""The ``kakeya`` command: roundtrip JSON, bad input exits non-zero with one line, demo, bench."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kakeya_lib import cli, synthetic


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_roundtrip_json_reports_real_bytes_and_ledger(tmp_path, capsys):
    x = synthetic.gaussian(4096, 128, seed=0)
    src, dst = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(src, x)
    code, out, _ = run_cli(["roundtrip", "--codec", "kakeya", "--input", str(src), "--output", str(dst), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert {"bytes", "ratio_vs_bf16", "rel_mse", "encode_s", "decode_s", "ledger"} <= set(report)
    assert sum(report["ledger"].values()) == report["bytes"]
    assert report["ratio_vs_bf16"] == pytest.approx(2 * x.size / report["bytes"])
    y = np.load(dst)
    assert y.shape == x.shape
    assert report["rel_mse"] == pytest.approx(float(((x - y) ** 2).sum() / (x**2).sum()), rel=1e-6)


def test_roundtrip_human_output(tmp_path, capsys):
    np.save(tmp_path / "x.npy", synthetic.kv_like(100, 16))
    code, out, _ = run_cli(["roundtrip", "--codec", "kakeya:bits=2", "--input", str(tmp_path / "x.npy")], capsys)
    assert code == 0 and "ratio" in out and "skeleton" in out


@pytest.mark.parametrize(
    "array,spec,message",
    [
        (np.zeros(7, dtype=np.float32), "kakeya", "2-D"),
        (np.zeros((0, 8), dtype=np.float32), "kakeya", "non-empty"),
        (np.array([[np.nan, 1.0]], dtype=np.float32), "kakeya", "NaN/Inf"),
        (np.zeros((2, 5000), dtype=np.float32), "kakeya", "4096"),
        (np.ones((4, 4), dtype=np.float32), "kakeya:nope=1", "unknown key"),
        (np.ones((4, 4), dtype=np.int64), "kakeya", "floating-point"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, array, spec, message):
    np.save(tmp_path / "x.npy", array)
    code, out, err = run_cli(["roundtrip", "--codec", spec, "--input", str(tmp_path / "x.npy")], capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_missing_file_and_pickled_arrays_are_rejected(tmp_path, capsys):
    code, _, err = run_cli(["roundtrip", "--codec", "kakeya", "--input", str(tmp_path / "none.npy")], capsys)
    assert code == 2 and "does not exist" in err
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run_cli(["roundtrip", "--codec", "kakeya", "--input", str(tmp_path / "obj.npy")], capsys)
    assert code == 2 and "pickle" in err


def test_codecs_lists_registered_names(capsys):
    code, out, _ = run_cli(["codecs"], capsys)
    names = [line.split(":")[0] for line in out.splitlines()]
    assert code == 0 and names == sorted(names) and {"identity", "kakeya", "turboquant", "int", "kivi", "fp8"} <= set(names)
    assert "kakeya: bits=3" in out


def test_bench_writes_json(tmp_path, capsys):
    dest = tmp_path / "bench.json"
    code, out, _ = run_cli(["bench", "--rows", "256", "--dims", "32", "--repeat", "1", "--json", str(dest)], capsys)
    assert code == 0 and "MB/s" in out
    result = json.loads(dest.read_text())["results"][0]
    assert result["encode_MBps"] > 0 and result["decode_MBps"] > 0
    assert "encode/skeleton" in result["stage_MBps"]


def test_demo_prints_the_table(capsys):
    code, out, _ = run_cli(["demo", "--rows", "256", "--dim", "32"], capsys)
    assert code == 0
    assert out.count("kakeya") >= 2 * len(cli.DEMO_SPECS) - 2 and "identity" in out


def test_console_script_and_module_entry_point(tmp_path):
    np.save(tmp_path / "x.npy", synthetic.kv_like(64, 8))
    exe = Path(sys.executable).with_name("kakeya")
    env = {**os.environ, "KAKEYA_DEVICE": "cpu"}
    for cmd in ([str(exe)], [sys.executable, "-m", "kakeya_lib"]):
        if cmd[0] == str(exe) and not exe.exists():
            continue
        proc = subprocess.run([*cmd, "roundtrip", "--codec", "identity", "--input", str(tmp_path / "x.npy"), "--json"],
                              capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["rel_mse"] == 0.0
