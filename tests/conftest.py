"""Shared fixtures: ``xp`` runs a test on every available array backend (numpy always, CuPy when
a GPU is usable; otherwise the CuPy case is skipped with a reason); ``tiny_corpus`` and
:class:`TinyTokenizer` give the tiny random models a corpus with calib and eval documents."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kakeya_lib import backend


def _backends() -> list:
    return [
        pytest.param("numpy", id="numpy"),
        pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
    ]


@pytest.fixture(params=_backends())
def xp(request, monkeypatch):
    """The array module under test (numpy or cupy); KAKEYA_DEVICE follows it."""
    if request.param == "numpy":
        monkeypatch.setenv(backend.DEVICE_ENV, "auto")
        return np
    if not backend.gpu_available():
        pytest.skip("CuPy with a usable CUDA device is not available")
    monkeypatch.setenv(backend.DEVICE_ENV, "gpu")
    return backend.cupy_or_raise()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def to_np(a) -> np.ndarray:
    """Host copy of a numpy or CuPy array."""
    return backend.to_host(a)


class TinyTokenizer:
    """Characters → ids 3..95 (the tiny models' vocabulary), BOS 1, EOS 2."""

    bos_token_id = 1
    eos_token_id = 2

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [3 + (ord(c) % 93) for c in text]}

    def decode(self, ids) -> str:
        return " ".join(map(str, ids))


@pytest.fixture(scope="module", name="tiny_corpus")
def tiny_corpus_fixture(tmp_path_factory):
    """80 random-word documents (a jsonl corpus), split into calib and eval by their ids."""
    from kakeya_lib.llm import corpora

    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(40)]
    docs = [{"id": f"doc-{i:03d}", "text": " ".join(rng.choice(words, size=int(rng.integers(80, 200))))}
            for i in range(80)]
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return corpora.load_corpus(path, cache_dir=folder / "hf")
