"""Atomic writes: a private temporary per process, no leftovers, readers never see a partial file."""

from __future__ import annotations

import os
import subprocess
import sys

from kakeya_lib.atomic import tmp_sibling, write_text_atomic


def test_tmp_sibling_is_private_to_the_process(tmp_path):
    path = tmp_path / "artifact.npz"
    tmp = tmp_sibling(path, ".npz")
    assert tmp.parent == tmp_path and str(os.getpid()) in tmp.name and tmp.name.endswith(".tmp.npz")
    other = subprocess.run([sys.executable, "-c", "from pathlib import Path; from kakeya_lib.atomic import "
                            f"tmp_sibling; print(tmp_sibling(Path({str(path)!r}), '.npz').name)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other != tmp.name


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "meta.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_processes_writing_the_same_file_at_once_leave_one_whole_copy(tmp_path):
    path = tmp_path / "shared.json"
    text = "x" * 2_000_000
    code = ("from pathlib import Path; from kakeya_lib.atomic import write_text_atomic\n"
            f"for _ in range(5): write_text_atomic(Path({str(path)!r}), {text[:1]!r} * {len(text)})")
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert all(p.wait() == 0 for p in procs)
    assert path.read_text() == text and sorted(p.name for p in tmp_path.iterdir()) == ["shared.json"]
