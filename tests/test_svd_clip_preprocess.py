"""SVD's CLIP conditioning preprocessing against the authors' own call, kornia 0.7.2's antialiased bicubic resize.

kornia is a test-only dependency (requirements-dev.txt); the comparisons skip,
saying so, when it is missing or another version is installed.  The checks that
need no kornia run always.
"""
import pytest
import torch
import torch.nn.functional as F

from vidseg_core.backbones.clip_resize import (blur_matrix, gaussian_sigma, gaussian_window,
                                               resize_antialiased_bicubic, resize_matrix)
from vidseg_core.backbones.svd import CLIP_MEAN, CLIP_STD, build_tiny_svd, clip_preprocess
from vidseg_core.errors import InputError

KORNIA_VERSION = "0.7.2"  # the version the authors pin
# (H, W): enlarging both axes, the authors' VSPW size, SVD's native size, unchanged, enlarging,
# odd on both axes, and height enlarging while width shrinks (kornia blurs the height with σ = 0.001 then)
SIZES = [(128, 192), (448, 832), (576, 1024), (224, 224), (100, 150), (333, 517), (200, 900)]
# measured max |ours - kornia| on uniform noise in -1..1 is <= 9e-7 (float32) and <= 4e-14 (float64)
ATOL = {torch.float32: 4e-6, torch.float64: 1e-12}


@pytest.fixture(scope="module")
def kornia_resize():
    kornia = pytest.importorskip("kornia", reason="kornia (test-only, requirements-dev.txt) is not installed: "
                                                  "the comparison with the authors' resize is skipped")
    if kornia.__version__ != KORNIA_VERSION:
        pytest.skip(f"kornia {kornia.__version__} installed; the authors' resize is kornia {KORNIA_VERSION} "
                    f"(pip install kornia=={KORNIA_VERSION})")

    def resize(x):
        return kornia.geometry.transform.resize(x, (224, 224), interpolation="bicubic", align_corners=True,
                                                antialias=True)
    return resize


def normalise(x):
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x + 1.0) / 2.0 - mean) / std


def noise(h, w, n=1, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------ against kornia
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hw", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_resize_matches_kornia(kornia_resize, hw, dtype):
    x = noise(*hw, n=2 if hw == (333, 517) else 1).to(dtype)
    ours = resize_antialiased_bicubic(x, (224, 224))
    ref = kornia_resize(x)
    assert ours.shape == ref.shape and ours.dtype == dtype
    torch.testing.assert_close(ours, ref, rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("hw", [(448, 832), (100, 150)], ids=["shrink", "enlarge"])
def test_clip_preprocess_is_the_authors(kornia_resize, hw):
    """(x + 1) / 2 and the CLIP mean/std after the resize; the old torch-antialias resize was far from it."""
    x = noise(*hw, seed=3)
    ref = normalise(kornia_resize(x))
    torch.testing.assert_close(clip_preprocess(x), ref, rtol=0, atol=2e-5)
    old = normalise(F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=True, antialias=True))
    assert (old - ref).abs().max() > 0.1


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_svd(device="cpu", dtype=torch.float32)


@torch.inference_mode()
def test_blackswan_embedding_is_computed_from_the_authors_preprocessing(kornia_resize, tiny, blackswan_frames):
    """The backbone's CLIP image embedding of a real 854x480 frame equals the one from kornia's preprocessing."""
    first = tiny.prepare_frames(blackswan_frames[:1])  # 832x448 in -1..1, as the conditioning frame
    assert first.shape[-2:] == (448, 832)
    enc = tiny.image_encoder
    emb = tiny.image_embedding(first)
    authors = enc(pixel_values=normalise(kornia_resize(first))).image_embeds
    torch.testing.assert_close(emb, authors, rtol=0, atol=1e-5)
    old_px = normalise(F.interpolate(first, size=(224, 224), mode="bicubic", align_corners=True, antialias=True))
    old = enc(pixel_values=old_px).image_embeds
    assert (emb - authors).abs().max() < 0.01 * (old - authors).abs().max()  # it moved to the authors' value
    cond = tiny.condition(tiny.prepare_frames(blackswan_frames[:2]), tiny.generator(1))
    torch.testing.assert_close(cond.image_embeds[1], authors, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ without kornia
def test_blur_rule():
    """σ = max((f-1)/2, 0.001), window int(max(4σ, 3)) made odd; no blur on an axis that does not shrink."""
    assert gaussian_sigma(832, 224) == pytest.approx((832 / 224 - 1) / 2)
    assert gaussian_sigma(100, 224) == 0.001 and gaussian_window(0.001) == 3
    assert gaussian_window(gaussian_sigma(832, 224)) == 5 and gaussian_window(gaussian_sigma(1024, 224)) == 7
    assert gaussian_window(1.0) == 5  # int(4.0) = 4 -> odd
    assert torch.equal(blur_matrix(150, 224), torch.eye(150, dtype=torch.float64))
    b = blur_matrix(20, 5)  # σ = 1.5, 7 taps; reflect border keeps every row a weighted average
    torch.testing.assert_close(b.sum(1), torch.ones(20, dtype=torch.float64))
    assert b[0, 0] == b[10, 10] and b[0, 1] == 2 * b[10, 11]  # sample 1 is also the mirror of sample -1


@pytest.mark.parametrize("hw", [(448, 832), (100, 150), (1, 7)])
def test_constant_image_and_corners_are_kept(hw):
    m = resize_matrix(hw[1], 224)
    torch.testing.assert_close(m.sum(1), torch.ones(224, dtype=torch.float64))
    x = torch.full((1, 3, *hw), 0.5)
    torch.testing.assert_close(resize_antialiased_bicubic(x, (224, 224)), torch.full((1, 3, 224, 224), 0.5))
    ramp = torch.linspace(-1, 1, 150).view(1, 1, 1, 150).expand(1, 3, 100, 150)
    out = resize_antialiased_bicubic(ramp, (224, 224))  # enlarging, align_corners: the corners are exact
    torch.testing.assert_close(out[..., 0], torch.full((1, 3, 224), -1.0))
    torch.testing.assert_close(out[..., -1], torch.full((1, 3, 224), 1.0))


def test_clip_preprocess_refuses_bad_shapes():
    with pytest.raises(InputError, match=r"\[N,3,H,W\]"):
        clip_preprocess(torch.zeros(3, 64, 64))
    with pytest.raises(InputError, match="channels first"):
        clip_preprocess(torch.zeros(1, 64, 64, 3))
