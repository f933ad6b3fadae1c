"""Segment Video with a core VIDEO input and its bounded outputs, through the node code with the stand-ins.

* the streamed path (VIDEO in) gives the IMAGE path's label maps and float outputs on the same frames;
* the VIDEO outputs are mp4 files (``VideoFromFile``) that read back frame for frame;
* the trim window is honoured (0.33's ``VideoFromFile``), and a video without one (0.3.64's) reads whole;
* float outputs: off for a VIDEO by default (blocked with the reason), refused before any work when they
  would not fit in memory;
* Save Label Maps writes spilled label maps frame range by frame range, never the whole video at once.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from tests.helpers.comfy_video_standin import (ExecutionBlocker, VideoFromFile, VideoFromFileV0364,  # noqa: E402
                                               write_test_video)
from tests.helpers.comfy_executor_standin import run_node as comfy_run  # noqa: E402
from tools.pack_loader import load_pack, pack_nodes  # noqa: E402

PACK = load_pack()
NODES = pack_nodes(PACK)
errors = sys.modules["vidseg_pack.vidseg_core.errors"]
memory_guard = sys.modules["vidseg_pack.vidseg_core.memory_guard"]
label_store = sys.modules["vidseg_pack.vidseg_core.label_store"]
VideoStream = sys.modules["vidseg_pack.vidseg_core.video_stream"].VideoStream

T, H, W, FPS = 9, 64, 128, 12


def run_node(node_id, **inputs):
    with torch.inference_mode():
        return comfy_run(NODES[node_id], **inputs)[0]


def _make_frames():
    """A yellow ellipse moving over a noisy blue background, uint8."""
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(0)
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        m = ((xx - (40 + 5 * t)) ** 2 / 36 ** 2 + (yy - 32) ** 2 / 22 ** 2) < 1
        img = np.empty((H, W, 3), np.float32)
        img[:] = (0.1, 0.3, 0.6)
        img[m] = (0.95, 0.9, 0.1)
        out[t] = (np.clip(img + 0.05 * rng.standard_normal((H, W, 3)), 0, 1) * 255).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("video") / "clip.mp4", _make_frames(), FPS)


@pytest.fixture(scope="module")
def decoded(clip):
    """The clip decoded whole (what an IMAGE batch from it holds)."""
    with av.open(clip) as c:
        return torch.from_numpy(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])).float() / 255


@pytest.fixture(scope="module")
def model():
    (handle,) = run_node("VidSegLoadModel", model="tiny-sd", precision="auto", device="cpu")
    return handle


ARGS = dict(num_clusters=3, mode="fast", batch_size=4)


def _read(video_out):
    with VideoStream(video_out.get_stream_source()) as vs:
        return vs.read(0, len(vs)), vs.fps


def test_streamed_video_gives_the_image_paths_labels_and_float_outputs(model, clip, decoded):
    img = run_node("VidSegSegmentVideo", model=model, frames=decoded, **ARGS)
    vid = run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), float_outputs="all", **ARGS)
    assert len(img) == len(vid) == 8
    assert vid[0].labels.shape == (T, H, W) and vid[0].labels.dtype == torch.uint8  # compact label ids
    assert torch.equal(vid[0].labels, img[0].labels) and len(set(vid[0].labels.unique().tolist())) > 1
    assert vid[0].table.to_dict() == img[0].table.to_dict()
    for k in (1, 2, 3):  # mask, all_masks, overlay
        assert torch.equal(vid[k], img[k])
    assert img[2].shape == (T * len(img[0].table), H, W)
    assert "float outputs: " in vid[4]


def test_video_outputs_are_files_that_read_back_frame_for_frame(model, clip, decoded, monkeypatch):
    held = []
    real_close = VideoStream.close
    monkeypatch.setattr(VideoStream, "close", lambda self: held.append(self.max_held) or real_close(self))
    out = run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), float_outputs="all", **ARGS)
    assert held and max(held) <= ARGS["batch_size"]  # the node's reader never held more than one batch
    labels, mask, over, over_video, mask_video = out[0], out[1], out[3], out[5], out[6]
    assert isinstance(over_video, VideoFromFile) and isinstance(mask_video, VideoFromFile)
    assert over_video.get_stream_source().endswith(".mp4") and "vidseg" in over_video.get_stream_source()
    frames, fps = _read(over_video)
    assert frames.shape == (T, H, W, 3) and fps == FPS
    assert (frames - over).abs().mean() < 0.03  # H.264 is lossy; the picture is the overlay
    masks, _ = _read(mask_video)
    agree = ((masks[..., 0] >= 0.5) == (mask >= 0.5)).float().mean()
    assert agree > 0.98 and mask.sum() > 0


@pytest.mark.parametrize("start, duration, first, count", [(0.25, 0.5, 3, 6), (0.5, 0.0, 6, 3)])
def test_trim_window_is_honoured(model, clip, decoded, start, duration, first, count):
    video = VideoFromFile(clip).as_trimmed(start, duration)
    assert video.get_components().images.shape[0] == count  # the stand-in's own decode agrees
    out = run_node("VidSegSegmentVideo", model=model, video=video, float_outputs="mask", **ARGS)
    assert out[0].labels.shape == (count, H, W) and out[1].shape == (count, H, W)
    img = run_node("VidSegSegmentVideo", model=model, frames=decoded[first:first + count], **ARGS)
    assert torch.equal(out[0].labels, img[0].labels)


@pytest.mark.filterwarnings("ignore:reference label")  # K = 3 on a random model
def test_a_reference_in_a_later_batch_reads_back_and_gives_the_image_paths_labels(model, clip, decoded):
    ref = torch.zeros(1, H, W)
    ref[0, 16:48, 60:110] = 1  # the ellipse region of frame 6
    args = dict(ARGS, reference_mask=ref, reference_frame=6)  # batch 1 first, then back to batch 0
    vid = run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), **args)
    img = run_node("VidSegSegmentVideo", model=model, frames=decoded, **args)
    assert torch.equal(vid[0].labels, img[0].labels) and vid[0].table.to_dict() == img[0].table.to_dict()
    assert [e.name for e in vid[0].table][:1] == ["background"]


def test_a_video_without_a_trim_window_reads_whole(model, clip):
    out = run_node("VidSegSegmentVideo", model=model, video=VideoFromFileV0364(clip), **ARGS)
    assert out[0].labels.shape == (T, H, W)


def test_float_outputs_are_off_for_a_video_by_default_and_say_why(model, clip):
    out = run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), **ARGS)
    for k in (1, 2, 3):
        assert isinstance(out[k], ExecutionBlocker)
        assert "float_outputs" in out[k].message and "overlay_video" in out[k].message
    assert "are off" in out[4]
    out = run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), float_outputs="mask", **ARGS)
    assert out[1].shape == (T, H, W) and isinstance(out[2], ExecutionBlocker) and isinstance(out[3], ExecutionBlocker)


def test_float_outputs_that_do_not_fit_are_refused_before_any_work(model, decoded, monkeypatch):
    # 6 MASK videos may be used: mask (1) + overlay (3) + all_masks (one per label, K = 3) = 7 do not fit
    monkeypatch.setattr(memory_guard, "available_bytes", lambda: 8 * T * H * W * 4)
    runner = sys.modules["vidseg_pack.nodes.segment_run"]
    started = []
    real = runner.VideoSegmenter
    monkeypatch.setattr(runner, "VideoSegmenter", lambda *a, **k: started.append(1) or real(*a, **k))
    with pytest.raises(errors.OutOfMemoryError, match=r"float outputs would take .*mask .*overlay .*"
                                                      r"Fix: Use the VIDEO outputs") as e:
        run_node("VidSegSegmentVideo", model=model, frames=decoded, **ARGS)
    assert "shorter range" in str(e.value)
    assert started == []  # refused before the segmentation started
    out = run_node("VidSegSegmentVideo", model=model, frames=decoded, float_outputs="mask", **ARGS)  # mask fits
    assert started == [1]
    assert out[1].shape == (T, H, W)


def test_frames_or_video_exactly_one(model, clip, decoded):
    with pytest.raises(errors.InputError, match="neither is connected"):
        run_node("VidSegSegmentVideo", model=model, **ARGS)
    with pytest.raises(errors.InputError, match="both are connected"):
        run_node("VidSegSegmentVideo", model=model, frames=decoded, video=VideoFromFile(clip), **ARGS)
    with pytest.raises(errors.InputError, match="not a VIDEO"):
        run_node("VidSegSegmentVideo", model=model, video="clip.mp4", **ARGS)

    class Unreadable(VideoFromFile):  # e.g. Create Video's output on a ComfyUI that cannot encode into memory
        def get_stream_source(self):
            raise ValueError("Could not determine output format")

    with pytest.raises(errors.InputError, match="cannot be read as a file .*Connect its frames as an IMAGE"):
        run_node("VidSegSegmentVideo", model=model, video=Unreadable(clip), **ARGS)
    with pytest.raises(errors.InputError, match="values in 0..1"):
        run_node("VidSegSegmentVideo", model=model, frames=decoded * 255, **ARGS)


def test_save_label_maps_streams_spilled_labels_from_disk(model, clip, monkeypatch, tmp_path):
    import folder_paths
    from PIL import Image

    monkeypatch.setattr(label_store, "DEFAULT_SPILL_BYTES", 0)  # spill even this short clip
    monkeypatch.setattr(sys.modules["vidseg_pack.nodes.stored_labels"], "CHUNK_FRAMES", 4)
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    labels = run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), **ARGS)[0]
    assert labels.store.spilled
    expected = labels.labels.clone()
    store_cls = type(labels.store)
    reads = []
    real_read = store_cls.read
    monkeypatch.setattr(store_cls, "read", lambda self, a, b: reads.append(b - a) or real_read(self, a, b))
    monkeypatch.setattr(store_cls, "tensor", lambda self: pytest.fail("the whole video was loaded"))
    monkeypatch.setattr(type(labels), "full_resolution", lambda self: pytest.fail("the whole video was loaded"))
    run_node("VidSegSaveLabelMaps", labels=labels, filename_prefix="run/labels")
    assert reads and max(reads) < T  # frame ranges, never the whole video
    saved = sorted((tmp_path / "run").glob("labels_00001_*.png"))
    assert len(saved) == T
    assert np.array_equal(np.stack([np.asarray(Image.open(p)) for p in saved]), expected.numpy())


def test_compact_spilled_labels_work_in_every_labels_node(model, clip, decoded, monkeypatch):
    monkeypatch.setattr(label_store, "DEFAULT_SPILL_BYTES", 0)
    out = run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), float_outputs="all", **ARGS)
    labels, mask, all_masks = out[0], out[1], out[2]
    assert labels.store.spilled and labels.labels.dtype == torch.uint8
    (selected,) = run_node("VidSegSelectLabels", labels=labels, select=",".join(map(str, labels.table.values[1:])))
    assert torch.equal(selected, mask)
    masks, count, _ = run_node("VidSegAllLabelMasks", labels=labels)
    assert torch.equal(masks, all_masks) and count == len(labels.table)
    colors, over = run_node("VidSegColorizeLabels", labels=labels, frames=decoded)
    assert torch.equal(over, out[3])
    report, _ = run_node("VidSegEvaluate", labels=labels, metrics="miou", protocol="unsupervised",
                         ground_truth_labels=colors)
    assert "miou" in report.lower()
    (again,) = run_node("VidSegGuidedUpsample", frames=decoded, coarse_labels=labels)
    assert again.labels.shape == (T, H, W) and getattr(again, "store", None) is None  # new maps: a plain copy


def test_extract_block_features_reads_a_video_batch_by_batch(model, clip, decoded, monkeypatch):
    opened = []
    real = VideoStream._decode_window
    monkeypatch.setattr(VideoStream, "_decode_window",
                        lambda self, a, b: opened.append(b - a) or real(self, a, b))
    (from_video,) = run_node("VidSegExtractFeatures", model=model, video=VideoFromFile(clip), batch_size=4)
    (from_frames,) = run_node("VidSegExtractFeatures", model=model, frames=decoded, batch_size=4)
    assert max(opened) <= 4  # batch by batch
    assert torch.equal(from_video.aggregated, from_frames.aggregated)
    assert torch.equal(from_video.correspondence, from_frames.correspondence)
    with pytest.raises(errors.InputError, match="Extract Block Features needs .* neither"):
        run_node("VidSegExtractFeatures", model=model)


def test_an_interrupted_run_leaves_no_partial_files(model, clip, monkeypatch, tmp_path):
    import folder_paths

    mm = sys.modules["comfy.model_management"]
    monkeypatch.setattr(folder_paths, "get_temp_directory", lambda: str(tmp_path))
    monkeypatch.setattr(label_store, "DEFAULT_SPILL_BYTES", 0)
    monkeypatch.setattr(mm, "interrupt_after_checks", 20)  # in the last of 3 batches (a whole run: 26 checks)
    monkeypatch.setattr(mm, "interrupt_checks", 0)
    with pytest.raises(mm.InterruptProcessingException) as excinfo:
        run_node("VidSegSegmentVideo", model=model, video=VideoFromFile(clip), **ARGS)
    assert mm.interrupt_checks == 20
    # removed at once, although the traceback (kept here) still holds the run's objects
    assert list((tmp_path / "vidseg").iterdir()) == [] and excinfo.traceback


def test_quality_mode_streams_too(model, clip, decoded):
    video = VideoFromFile(clip).as_trimmed(0.0, 5 / FPS)  # 5 frames: a batch of 4 and an overlapping tail
    args = dict(num_clusters=2, mode="quality", batch_size=4)
    vid = run_node("VidSegSegmentVideo", model=model, video=video, **args)
    img = run_node("VidSegSegmentVideo", model=model, frames=decoded[:5], **args)
    assert vid[0].labels.shape == (5, H, W) and torch.equal(vid[0].labels, img[0].labels)
