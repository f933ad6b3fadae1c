import pytest
import torch

from vidseg_core.__main__ import main
from vidseg_core.backbones import load_backbone
from vidseg_core.errors import InputError
from vidseg_core.features import aggregate_queries, extract_features
from vidseg_core.video_features import VideoFeatures


@pytest.fixture(scope="module")
def tiny_sd():
    return load_backbone("tiny-sd", device="cpu", precision="fp32")


def test_aggregation_is_mean_then_max_abs_per_token():
    a = torch.tensor([[[1.0, -4.0]]])
    b = torch.tensor([[[3.0, 0.0]]])
    out = aggregate_queries([a, b])  # mean = (2, -2) -> / 2
    assert torch.equal(out, torch.tensor([[[1.0, -1.0]]]))


def test_blackswan_grid_is_28_by_52(tiny_sd, blackswan_frames):
    feats = extract_features(tiny_sd, blackswan_frames[:1])
    assert feats.frame_size == (480, 854) and feats.work_size == (448, 832)
    assert feats.grid == (28, 52)
    assert feats.aggregated.shape[:3] == (1, 28, 52) and feats.correspondence.shape[:3] == (1, 28, 52)
    assert feats.aggregated.dtype == torch.float16 and feats.aggregated.device.type == "cpu"
    # max-abs normalised: every token's largest magnitude is 1
    m = feats.aggregated.float().abs().amax(-1)
    assert torch.allclose(m, torch.ones_like(m), atol=1e-3)


@pytest.mark.parametrize("n,b", [(1, 14), (5, 2), (4, 4)])
def test_any_number_of_frames(tiny_sd, n, b):
    frames = torch.rand(n, 64, 128, 3, generator=torch.Generator().manual_seed(n))
    feats = extract_features(tiny_sd, frames, batch_size=b)
    assert feats.num_frames == n and feats.grid == (4, 8)
    assert torch.isfinite(feats.aggregated.float()).all()


def test_same_seed_same_features(tiny_sd):
    frames = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    a = extract_features(tiny_sd, frames, seed=1)
    b = extract_features(tiny_sd, frames, seed=1)
    c = extract_features(tiny_sd, frames, seed=2)
    assert torch.equal(a.aggregated, b.aggregated) and torch.equal(a.correspondence, b.correspondence)
    assert not torch.equal(a.aggregated, c.aggregated)


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-svd"])
def test_last_evaluation_conditional_only_and_stopped_after_block_8_gives_identical_features(name):
    from vidseg_core.backbones.attention import CaptureQueries
    from vidseg_core.features import capture_features, prepare_batch

    bb = load_backbone(name, device="cpu", precision="fp32")
    frames = torch.rand(2, 64, 128, 3, generator=torch.Generator().manual_seed(5))
    inputs = prepare_batch(bb, frames)
    seen = []

    class Record(CaptureQueries):  # records (block, rows) of the layers that ran at the feature step
        def on_qk(self, layer, q, k, ctx):
            seen.append((layer.block, ctx.layout.rows))
            return q, k

    with bb.hooks(Record(set(bb.attention_layers()), steps={bb.config.feature_step})):
        full = capture_features(bb, inputs, stop_early=False)
        full_seen = list(seen)
        seen.clear()
        early = capture_features(bb, inputs)
    torch.testing.assert_close(early[0], full[0], rtol=1e-3, atol=1e-3)  # fp16 storage: one ulp at most
    torch.testing.assert_close(early[1], full[1], rtol=1e-3, atol=1e-3)
    assert max(b for b, _ in full_seen) == 11 and {r for _, r in full_seen} == {4}  # 2 halves x 2 frames
    assert max(b for b, _ in seen) == 8 and {r for _, r in seen} == {2}  # conditional half only, blocks 9-11 skipped
    assert bb.controller.hooks == []


def test_tail_batch_does_not_overwrite(tiny_sd):
    """With B=2 and 3 frames, frames 0-1 come from batch [0,2); the tail batch [1,3) writes only frame 2."""
    frames = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    whole = extract_features(tiny_sd, frames, batch_size=2)
    first = extract_features(tiny_sd, frames[:2], batch_size=2)
    assert torch.equal(whole.aggregated[:2], first.aggregated)


def test_feature_file_round_trip_and_cli(tmp_path, tiny_sd):
    import numpy as np
    from PIL import Image

    d = tmp_path / "frames"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 128, 3), 60 * i, np.uint8)).save(d / f"{i:05d}.png")
    out = tmp_path / "f.safetensors"
    assert main(["features", str(d), "--model", "tiny-sd", "--out", str(out), "--device", "cpu"]) == 0
    feats = VideoFeatures.load(out)
    assert feats.num_frames == 3 and feats.grid == (4, 8) and feats.backbone == "tiny-sd"
    # refuses to overwrite without --overwrite; nothing is lost
    before = out.read_bytes()
    assert main(["features", str(d), "--model", "tiny-sd", "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert main(["features", str(tmp_path / "missing"), "--model", "tiny-sd", "--out", str(tmp_path / "g.safetensors")]) == 2
    assert main(["features", str(d), "--model", "no-such-model.safetensors", "--out", str(tmp_path / "g.safetensors")]) == 2
    with pytest.raises(InputError):
        VideoFeatures.load(d / "00000.png")


def _order_sensitive_queries():
    """Queries of blocks 6, 7, 8 whose float32 sum depends on the order: 1 + 2^-24 + 2^-24 is 1 summed from
    block 6 (each 2^-24 is lost to rounding) but 1 + 2^-23 summed from block 8 (the two small ones first)."""
    tiny = 2.0 ** -24
    blocks = {6: [3.0, 1.0, -1.0], 7: [3.0, tiny, -tiny], 8: [3.0, tiny, -tiny]}
    return {b: torch.tensor(v, dtype=torch.float32).expand(2, 4, 3).clone() for b, v in blocks.items()}


def test_aggregation_sums_in_the_authors_block_order():
    """The authors' float32 mean of the stack [block 8, block 7, block 6] is ((q8 + q7) + q6) / 3; the
    expected tokens are computed here with numpy float32 in that order."""
    import numpy as np
    from types import SimpleNamespace

    from vidseg_core.backbones.attention import LayerId
    from vidseg_core.features import features_from_capture

    q = _order_sensitive_queries()
    f32 = np.float32
    mean = ((q[8].numpy().astype(f32) + q[7].numpy()) + q[6].numpy()) / f32(3)
    expected = mean / np.abs(mean).max(-1, keepdims=True)
    config = SimpleNamespace(feature_step=24, feature_blocks=(6, 7, 8), correspondence_block=7)
    capture = SimpleNamespace(captured={(24, LayerId(b, "spatial_self")): t for b, t in q.items()})
    inputs = SimpleNamespace(latent_hw=(4, 4), z0=torch.zeros(2, 4, 4, 4))
    agg, corr = features_from_capture(capture, inputs, config, store_dtype=torch.float32)
    got = agg.reshape(2, 4, 3).numpy()
    assert np.array_equal(got, expected)  # bitwise
    # the other order (6, 7, 8) gives another value: the test can tell the orders apart
    other = ((q[6].numpy() + q[7].numpy()) + q[8].numpy()) / f32(3)
    assert not np.array_equal(other / np.abs(other).max(-1, keepdims=True), expected)
    assert torch.equal(corr.reshape(2, 4, 3), q[7])


def test_aggregation_refuses_no_blocks():
    with pytest.raises(InputError, match="No feature blocks"):
        aggregate_queries([])
