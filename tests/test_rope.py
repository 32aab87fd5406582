"""Array-level RoPE: both conventions, inverse, and agreement with transformers' own rotation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kakeya_lib.errors import InputError
from kakeya_lib.rope import apply_rope, inverse_rope

from .conftest import to_np


@pytest.mark.parametrize("convention", ["half", "pairs"])
def test_inverse_undoes_the_rotation_and_norms_are_kept(convention, xp, rng):
    x = xp.asarray(rng.standard_normal((3, 50, 64)).astype(np.float32))
    pos = np.arange(100, 150)
    y = apply_rope(x, pos, 1e5, convention)
    np.testing.assert_allclose(to_np(inverse_rope(y, pos, 1e5, convention)), to_np(x), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(to_np(y), axis=-1), np.linalg.norm(to_np(x), axis=-1), rtol=1e-5)
    assert not np.allclose(to_np(y), to_np(x))


def test_position_zero_is_the_identity_and_conventions_differ(rng):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(apply_rope(x, np.zeros(4)), x)
    pos = np.arange(4)
    assert not np.allclose(apply_rope(x, pos, convention="half"), apply_rope(x, pos, convention="pairs"))


def test_half_convention_matches_transformers_llama_rotation(rng):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from kakeya_lib.llm.models import tiny_model

    model = tiny_model("llama")  # head_dim 16, theta 1e4
    x = torch.from_numpy(rng.standard_normal((1, 2, 12, 16)).astype(np.float32))
    pos = torch.arange(5, 17)[None]
    cos, sin = model.model.rotary_emb(x, pos)
    _, theirs = apply_rotary_pos_emb(x, x, cos, sin)
    ours = apply_rope(x.numpy(), pos[0].numpy(), theta=10000.0, convention="half")
    np.testing.assert_allclose(ours, theirs.numpy(), atol=2e-5)
    np.testing.assert_allclose(inverse_rope(theirs.numpy(), pos[0].numpy(), 10000.0), x.numpy(), atol=2e-5)


def test_pairs_convention_matches_a_complex_rotation(rng):
    x = rng.standard_normal((6, 8)).astype(np.float32)
    pos = np.arange(6)
    z = x[:, 0::2] + 1j * x[:, 1::2]
    freqs = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    rotated = z * np.exp(1j * pos[:, None] * freqs[None, :])
    expected = np.empty_like(x)
    expected[:, 0::2], expected[:, 1::2] = rotated.real, rotated.imag
    np.testing.assert_allclose(apply_rope(x, pos, convention="pairs"), expected, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(InputError, match="even"):
        apply_rope(np.zeros((2, 3), np.float32), np.arange(2))
    with pytest.raises(InputError, match="positions"):
        apply_rope(np.zeros((2, 4), np.float32), np.arange(3))
    with pytest.raises(InputError, match="convention"):
        apply_rope(np.zeros((2, 4), np.float32), np.arange(2), convention="gptj")


def test_explicit_frequencies_match_theta():
    from kakeya_lib.rope import apply_rope, apply_rope_freqs

    x = np.random.default_rng(0).standard_normal((2, 7, 16)).astype(np.float32)
    inv = 1e5 ** (-np.arange(0, 16, 2) / 16)
    np.testing.assert_allclose(apply_rope_freqs(x, np.arange(7), inv), apply_rope(x, np.arange(7), 1e5), atol=1e-6)
    with pytest.raises(InputError):
        apply_rope_freqs(x, np.arange(7), inv[:-1])
