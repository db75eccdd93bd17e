"""Tiled transforms for large photos (models.tiling): a tile's core, computed with its halo,
equals the whole-image pass up to float rounding, and a learned codec that tiles still writes
streams that decode, with the same symbols as untiled coding (bar rare rounding ties) and
pixels within a level. Tiles are made tiny here (2 latents = 32 px) so that a small image
spans many of them, corners and edges included."""

import numpy as np
import pytest
import torch
from conftest import synthetic_image
from learned_fixtures import TINY_WEIGHTS, TinyCodec, make_tiny_weights

import models.tiling as tiling
from models.learned import LearnedModel
from models.tiling import tiled


@pytest.fixture(scope="module")
def model() -> LearnedModel:
    if not TINY_WEIGHTS.exists():
        make_tiny_weights()
    return LearnedModel.from_file(TINY_WEIGHTS)


@pytest.mark.parametrize("core", [1, 2, 3])
def test_tiles_with_halo_equal_the_whole_pass(model, core):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 7 * 16, 5 * 16)  # 7 x 5 latents: uneven last tiles
    with torch.inference_mode():
        whole = model.net.g_a(x)
        parts = tiled(model.net.g_a, x, 16, 1, core=core, halo=4)
        assert parts.shape == whole.shape
        assert torch.allclose(parts, whole, atol=1e-4, rtol=0)
        y = whole[:, :, :6, :4]
        assert torch.allclose(tiled(model.net.g_s, y, 1, 16, core=core, halo=4), model.net.g_s(y),
                              atol=1e-4, rtol=0)


def test_without_halo_tiles_would_differ(model):
    """The halo is what makes tiling exact: with none, the tile edges show (the test above
    would catch a halo that is too small)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 6 * 16, 6 * 16)
    with torch.inference_mode():
        assert not torch.allclose(tiled(model.net.g_a, x, 16, 1, core=2, halo=0),
                                  model.net.g_a(x), atol=1e-4, rtol=0)


def test_a_tiling_codec_codes_like_the_whole_pass(model, monkeypatch):
    images = [synthetic_image(3, 150, 230)]  # padded to 192 x 256: 12 x 16 latents
    codec = TinyCodec(4.0, model=model)
    whole_stream = codec.encode_batch(images)[0]
    whole = codec.decode_batch([whole_stream])[0]

    monkeypatch.setattr(tiling, "TILE_ABOVE_PIXELS", 0)
    monkeypatch.setattr(tiling, "TILE_LATENTS", 2)
    tiled_stream = codec.encode_batch(images)[0]
    from_tiles = codec.decode_batch([tiled_stream])[0]
    assert from_tiles.image.shape == whole.image.shape == images[0].shape
    n = (len(whole.content) - 10) // 4
    a = np.frombuffer(whole.content[10:], "<i4")
    b = np.frombuffer(from_tiles.content[10:], "<i4")
    assert a.size == b.size == n
    assert np.count_nonzero(a != b) <= max(1, n // 1000)  # rounding ties only, if any
    # the same stream through the tiled and the whole g_s: pixels within one level
    tiled_decode = codec.decode_batch([whole_stream])[0]
    assert tiled_decode.content == whole.content
    diff = np.abs(tiled_decode.image.astype(int) - whole.image.astype(int))
    assert diff.max() <= 1


@pytest.mark.parametrize(("n_h", "n_w", "core", "halo"), [(7, 5, 2, 4), (64, 64, 64, 4), (130, 3, 64, 9)])
def test_square_tiles_cover_the_grid_once_with_clipped_halos(n_h, n_w, core, halo):
    """The transforms' tile geometry: square cores from the top-left corner (the last ones
    shorter), each with its halo clipped at the border."""
    covered = np.zeros((n_h, n_w), int)
    for (a, b, c, d), (ia, ib, ic, id_) in tiling.square_tiles(n_h, n_w, core, halo):
        covered[a:b, c:d] += 1
        assert a % core == 0 and c % core == 0 and b - a <= core and d - c <= core
        assert (ia, ib, ic, id_) == (max(0, a - halo), min(n_h, b + halo), max(0, c - halo),
                                     min(n_w, d + halo))
    assert (covered == 1).all()
