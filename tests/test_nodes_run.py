"""Running the VidSeg nodes the way ComfyUI does, without ComfyUI.

* the bundled SD 2.1 workflow, converted UI -> API, executes node by node in
  topological order (inside ``torch.inference_mode()`` as ComfyUI's executor)
  with ``tiny-sd`` on 4 frames of 64x128 and stand-ins for the core nodes;
* the stage nodes give exactly the one-box node's labels (quality and fast);
* interrupts raise ComfyUI's exception mid-run, progress bars reach their
  total, ``keep_model_loaded`` off offloads (also after an interrupt);
* masks are one per frame at the input resolution, never an empty batch.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.comfy_executor_standin import run_node as comfy_run
from tools.comfy_graph import topological_order, ui_to_api
from tools.pack_loader import load_pack, pack_nodes, pack_specs

PACK = load_pack()
NODES = pack_nodes(PACK)
SPECS = pack_specs(PACK)
WF_DIR = Path(__file__).resolve().parents[1] / "workflows"
mm = sys.modules["comfy.model_management"]
ProgressBar = sys.modules["comfy.utils"].ProgressBar
core = sys.modules["vidseg_pack.vidseg_core.errors"]
sockets = sys.modules["vidseg_pack.nodes.sockets"]
labels_mod = sys.modules["vidseg_pack.vidseg_core.labels"]
VideoStream = sys.modules["vidseg_pack.vidseg_core.video_stream"].VideoStream

T, H, W = 4, 64, 128


def make_video():
    """A yellow ellipse moving over a noisy blue background, and its masks."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    g = torch.Generator().manual_seed(0)
    frames, masks = torch.empty(T, H, W, 3), torch.zeros(T, H, W)
    for t in range(T):
        m = ((xx - (48 + 6 * t)) ** 2 / 40 ** 2 + (yy - 32) ** 2 / 24 ** 2) < 1
        img = torch.empty(H, W, 3)
        img[:] = torch.tensor([0.1, 0.3, 0.6])
        img[m] = torch.tensor([0.95, 0.9, 0.1])
        frames[t] = (img + 0.05 * torch.randn(H, W, 3, generator=g)).clamp(0, 1)
        masks[t] = m.float()
    return frames, masks


FRAMES, MASKS = make_video()


def run_node(node_id, **inputs):
    """The node's outputs, run as ComfyUI's executor runs it (a V3 node: ``execute`` on a locked class copy)."""
    with torch.inference_mode():
        return comfy_run(NODES[node_id], **inputs)[0]


@pytest.fixture(autouse=True)
def no_interrupt():
    mm.interrupt_after_checks, mm.interrupt_checks = None, 0
    yield
    mm.interrupt_after_checks, mm.interrupt_checks = None, 0


@pytest.fixture(scope="module")
def model():
    (handle,) = run_node("VidSegLoadModel", model="tiny-sd", precision="auto", device="cpu")
    return handle


def new_bars():
    start = len(ProgressBar.instances)
    return lambda: ProgressBar.instances[start:]


# ------------------------------------------------------------------ core node stand-ins
_CLIP: dict = {}


class _Core:
    """Stand-ins for the core nodes the workflows use: same inputs and output types, trivial work."""

    calls: dict = {}

    @staticmethod
    def LoadVideo(file):
        """A VIDEO (the core type's stand-in) over an mp4 of FRAMES, written once."""
        from tests.helpers.comfy_video_standin import VideoFromFile, write_test_video

        if "clip" not in _CLIP:
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix="vidseg_workflow_"))
            _CLIP["clip"] = write_test_video(folder / "clip.mp4", (FRAMES * 255).round().byte().numpy(), 8)
        return (VideoFromFile(_CLIP["clip"]),)

    @staticmethod
    def GetVideoComponents(video):
        return (FRAMES.clone(), None, 8.0)

    @staticmethod
    def LoadImage(image):  # a painted first frame: LoadImage's MASK is 1 - alpha
        return (FRAMES[:1].clone(), MASKS[:1].clone())

    @staticmethod
    def ImageScale(image, upscale_method, width, height, crop):
        if height == 0:
            height = round(image.shape[1] * width / image.shape[2])
        return (F.interpolate(image.movedim(-1, 1), (height, width), mode="area").movedim(1, -1),)

    @staticmethod
    def MaskToImage(mask):
        return (mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3),)

    @staticmethod
    def CreateVideo(images, fps, audio=None):
        return ({"images": images, "fps": fps},)

    @staticmethod
    def SaveVideo(video, filename_prefix, format, codec):
        _Core.calls.setdefault("SaveVideo", []).append(video)
        return {"ui": {"images": []}, "result": ()}

    @staticmethod
    def PreviewImage(images):
        _Core.calls.setdefault("PreviewImage", []).append(images)
        return {"ui": {"images": []}, "result": ()}

    @staticmethod
    def CheckpointLoaderSimple(ckpt_name):
        """``tiny-sd``: stand-ins of ComfyUI's MODEL / CLIP / VAE over the tiny SD 2.1 twin."""
        from tests.helpers.comfy_standin import standin_sd

        assert ckpt_name == "tiny-sd", ckpt_name
        return standin_sd()

    @staticmethod
    def ImageOnlyCheckpointLoader(ckpt_name):
        from tests.helpers.comfy_standin import standin_svd

        assert ckpt_name == "tiny-svd", ckpt_name
        return standin_svd()

    @staticmethod
    def CLIPTextEncode(text, clip):
        return ([[torch.zeros(1, 77, 8), {}]],)

    @staticmethod
    def VAEEncode(pixels, vae):
        return ({"samples": torch.zeros(pixels.shape[0], 4, pixels.shape[1] // 8, pixels.shape[2] // 8)},)

    @staticmethod
    def GrowMask(mask, expand, tapered_corners):
        m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (F.max_pool2d(m, 2 * expand + 1, 1, expand)[:, 0],)

    @staticmethod
    def SetLatentNoiseMask(samples, mask):
        return ({**samples, "noise_mask": mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))},)

    @staticmethod
    def KSampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise):
        _Core.calls.setdefault("KSampler", []).append(latent_image)
        return (latent_image,)

    @staticmethod
    def VAEDecode(samples, vae):
        s = samples["samples"]
        return (torch.zeros(s.shape[0], s.shape[2] * 8, s.shape[3] * 8, 3),)


#: loader outputs by inputs, kept across prompts as ComfyUI's output cache does
_LOADED: dict = {}
LOADERS = ("VidSegLoadModel", "CheckpointLoaderSimple", "ImageOnlyCheckpointLoader")


def execute(api):
    """Run an API prompt: nodes in topological order, links resolved to earlier outputs."""
    results, uis = {}, {}
    _Core.calls = {}
    for key in topological_order(api):
        node = api[key]
        kwargs = {k: results[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        cache_key = node["class_type"] + json.dumps(kwargs, sort_keys=True, default=id)
        if node["class_type"] in LOADERS and cache_key in _LOADED:
            results[key] = _LOADED[cache_key]
            continue
        if node["class_type"] in NODES:
            with torch.inference_mode():
                out, uis[key] = comfy_run(NODES[node["class_type"]], **kwargs)
        else:
            with torch.inference_mode():
                out = getattr(_Core, node["class_type"])(**kwargs)
        if isinstance(out, dict):
            uis[key] = out.get("ui")
            out = out.get("result", ())
        assert isinstance(out, tuple), node["class_type"]
        results[key] = out
        if node["class_type"] in LOADERS:
            _LOADED[cache_key] = out
    return results, uis


def workflow_api(stem, overrides):
    """API prompt of a bundled workflow with widget overrides {(class_type, input): value}."""
    api = ui_to_api(json.loads((WF_DIR / f"{stem}.json").read_text()), SPECS)
    for node in api.values():
        for (ctype, name), value in overrides.items():
            if node["class_type"] == ctype:
                assert name in node["inputs"], (ctype, name)
                node["inputs"][name] = value
    return api


def by_type(api, results, ctype):
    return [results[k] for k, n in api.items() if n["class_type"] == ctype]


# ------------------------------------------------------------------ workflows
def test_sd21_workflow_executes_with_tiny_sd(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    api = workflow_api("vidseg_sd21_full_pipeline", {("CheckpointLoaderSimple", "ckpt_name"): "tiny-sd",
                                                      ("VidSegKMeansInit", "num_clusters"): 3})
    bars = new_bars()
    results, uis = execute(api)
    (labels,) = by_type(api, results, "VidSegMaskedModulation")[0]
    assert labels.labels.shape == (T, H, W) and not labels.coarse and labels.labels.dtype == torch.long
    assert set(labels.labels.unique().tolist()) <= set(labels.table.values)
    (coarse,) = by_type(api, results, "VidSegKNNContextModel")[0]
    assert coarse.coarse and coarse.labels.shape == (T, 4, 8)
    (mask,) = by_type(api, results, "VidSegSelectLabels")[0]
    assert mask.shape == (T, H, W) and mask.dtype == torch.float32
    color, over = by_type(api, results, "VidSegColorizeLabels")[0]
    assert color.shape == over.shape == (T, H, W, 3) and 0 <= float(over.min()) and float(over.max()) <= 1
    assert _Core.calls["PreviewImage"][0] is over
    assert _Core.calls["SaveVideo"][0]["images"].shape == (T, H, W, 3)
    saved = sorted(tmp_path.rglob("*.png"))
    assert len(saved) == T and any(u and u.get("images") for u in uis.values())
    assert all(b.current == b.total for b in bars()), [(b.current, b.total) for b in bars()]
    assert len(bars()) == 4  # features, context model, modulation, save


def test_inpainting_and_preview_workflows_execute(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    api = workflow_api("vidseg_mask_to_inpainting", {("CheckpointLoaderSimple", "ckpt_name"): "tiny-sd",
                                                      ("VidSegSegmentVideo", "num_clusters"): 3,
                                                      ("VidSegSegmentVideo", "mode"): "fast"})
    results, _ = execute(api)
    labels, mask, all_masks, over, info = by_type(api, results, "VidSegSegmentVideo")[0][:5]
    assert mask.shape == (T, H, W) and over.shape == (T, H, W, 3)
    assert all_masks.shape == (T * len(labels.table), H, W)
    assert torch.equal(all_masks.reshape(len(labels.table), T, H, W).sum(0), torch.ones(T, H, W))
    latent = _Core.calls["KSampler"][0]
    assert latent["noise_mask"].shape == (T, 1, H, W)  # one mask per frame reaches the sampler
    assert "labels" in info
    api = workflow_api("vidseg_fast_preview", {("VidSegLoadModel", "model"): "tiny-sd",
                                                ("VidSegSegmentVideo", "num_clusters"): 3})
    results, _ = execute(api)
    labels, mask, all_masks, over, info, over_video, mask_video, shots = by_type(api, results, "VidSegSegmentVideo")[0]
    assert labels.labels.shape == (T, H, W) and labels.labels.dtype == torch.uint8  # streamed from the VIDEO
    assert shots["num_frames"] == T and shots["cut_detection"] == "frames"
    blocker = sys.modules["comfy_execution.graph_utils"].ExecutionBlocker
    assert all(isinstance(x, blocker) for x in (mask, all_masks, over))  # float outputs off for a VIDEO
    assert _Core.calls["SaveVideo"] == [over_video]  # the overlay VIDEO goes to Save Video
    with VideoStream(over_video.get_stream_source()) as vs:
        assert len(vs) == T and vs.frame_size == (H, W) and vs.fps == 8
    assert len(sorted((tmp_path / "vidseg").glob("preview_labels_*.png"))) == T


def test_svd_workflow_executes_with_the_core_loader_and_the_adapter(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    api = workflow_api("vidseg_svd_full_pipeline", {("ImageOnlyCheckpointLoader", "ckpt_name"): "tiny-svd",
                                                     ("VidSegKMeansInit", "num_clusters"): 3})
    results, _ = execute(api)
    (handle,) = by_type(api, results, "VidSegModelFromComfy")[0]
    assert handle.family == "svd" and type(handle.backbone).__name__ == "ComfySVDBackbone"
    (labels,) = by_type(api, results, "VidSegMaskedModulation")[0]
    assert labels.labels.shape == (T, H, W) and not labels.coarse
    model = by_type(api, results, "ImageOnlyCheckpointLoader")[0][0]
    assert model.model_options["transformer_options"] == {}  # the core MODEL is left as it was


def _stage_chain(model, k, reference=None):
    (feats,) = run_node("VidSegExtractFeatures", model=model, frames=FRAMES)
    (clusters,) = run_node("VidSegKMeansInit", features=feats, num_clusters=k)
    named, _ = run_node("VidSegAssignLabels", clusters=clusters, reference_mask=reference)
    refiner, none = run_node("VidSegCBRRefine")
    assert none is None
    (coarse,) = run_node("VidSegKNNContextModel", features=feats, clusters=named, refiner=refiner)
    return coarse


def test_stage_nodes_reproduce_the_one_box_node_quality(model):
    coarse = _stage_chain(model, 2)  # no reference: both clusters are labels, so modulation really runs
    assert coarse.table.values == [0, 1] and coarse.table.kind == "cluster"
    (full,) = run_node("VidSegMaskedModulation", model=model, frames=FRAMES, coarse_labels=coarse)
    assert set(full.labels.unique().tolist()) == {0, 1}
    one = run_node("VidSegSegmentVideo", model=model, frames=FRAMES, num_clusters=2, mode="quality")
    assert torch.equal(one[0].labels, full.labels)  # the same noisy latents are rebuilt from the seed
    assert one[0].table.to_dict() == full.table.to_dict()


def test_stage_nodes_reproduce_the_one_box_node_fast_with_a_reference(model):
    coarse = _stage_chain(model, 3, MASKS[:1])
    (fast,) = run_node("VidSegGuidedUpsample", frames=FRAMES, coarse_labels=coarse)
    one = run_node("VidSegSegmentVideo", model=model, frames=FRAMES, num_clusters=3, mode="fast",
                   reference_mask=MASKS[:1])
    assert torch.equal(one[0].labels, fast.labels)
    assert one[0].table.to_dict() == fast.table.to_dict()
    assert [e.name for e in fast.table][:1] == ["background"]


# ------------------------------------------------------------------ interrupt / progress / offload
def _raises_in(excinfo, filename):
    return any(Path(str(e.path)).name == filename for e in excinfo.traceback)


def test_interrupt_stops_masked_modulation_mid_run_and_still_offloads(model, monkeypatch):
    (feats,) = run_node("VidSegExtractFeatures", model=model, frames=FRAMES)
    (clusters,) = run_node("VidSegKMeansInit", features=feats, num_clusters=3)
    (coarse,) = run_node("VidSegKNNContextModel", features=feats, clusters=clusters)
    assert len(coarse.table) == 3
    moves, empties = _spy_model(model, monkeypatch)
    mm.interrupt_after_checks, mm.interrupt_checks = 4, 0
    bars = new_bars()
    with pytest.raises(mm.InterruptProcessingException) as excinfo:
        run_node("VidSegMaskedModulation", model=model, frames=FRAMES, coarse_labels=coarse)
    assert mm.interrupt_checks == 4  # stopped at the check that saw the flag, nothing ran after it
    assert _raises_in(excinfo, "runner.py"), "the interrupt must come from inside the modulation loop"
    assert bars()[0].current < bars()[0].total
    assert moves[-1] == OFFLOAD and empties == [1], "offloaded even though interrupted"


def test_interrupt_stops_feature_extraction_between_batches(model):
    mm.interrupt_after_checks, mm.interrupt_checks = 2, 0
    with pytest.raises(mm.InterruptProcessingException) as excinfo:
        run_node("VidSegExtractFeatures", model=model, frames=FRAMES, batch_size=2)
    assert _raises_in(excinfo, "features.py")
    assert mm.interrupt_checks == 2


def test_interrupt_stops_the_one_box_node_inside_the_upsampler(model):
    # checks before the upsampler include the stage ticks (features, coarse, upsample) of the batch
    mm.interrupt_after_checks, mm.interrupt_checks = 6, 0
    with pytest.raises(mm.InterruptProcessingException) as excinfo:
        run_node("VidSegSegmentVideo", model=model, frames=FRAMES, num_clusters=3, mode="fast")
    assert _raises_in(excinfo, "guided.py") and _raises_in(excinfo, "pipeline.py")


OFFLOAD = torch.device("cpu", 0)


def _spy_model(handle, monkeypatch):
    moves, empties = [], []
    real_to = handle.backbone.to

    def to(device=None, dtype=None):
        moves.append(torch.device(device))
        real_to("cpu", dtype)
        handle.backbone.device = torch.device(device)  # pretend it moved (both are the CPU here)
        return handle.backbone

    monkeypatch.setattr(handle.backbone, "to", to)
    monkeypatch.setattr(handle.backbone, "device", handle.backbone.device)  # restored after the test
    monkeypatch.setattr(mm, "unet_offload_device", lambda: OFFLOAD)
    monkeypatch.setattr(mm, "soft_empty_cache", lambda force=False: empties.append(1))
    return moves, empties


@pytest.mark.parametrize("keep", [False, True])
def test_keep_model_loaded(model, monkeypatch, keep):
    moves, empties = _spy_model(model, monkeypatch)
    bars = new_bars()
    run_node("VidSegExtractFeatures", model=model, frames=FRAMES, keep_model_loaded=keep)
    if keep:
        assert moves == [] and empties == []  # already on the compute device, and stays there
    else:
        assert moves == [OFFLOAD] and empties == [1]
        run_node("VidSegExtractFeatures", model=model, frames=FRAMES, keep_model_loaded=True)
        assert moves == [OFFLOAD, model.device], "moved back to the compute device for the work"
    bar = bars()[0]
    assert bar.current == bar.total == T


def test_loader_errors_are_readable(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "checkpoints", ([str(tmp_path)], set()))
    with pytest.raises(core.ModelLoadError) as e:
        run_node("VidSegLoadModel", model="checkpoints/v2-1_512-ema-pruned.safetensors")
    assert str(tmp_path) in str(e.value) and "models/checkpoints" in str(e.value)
    (tmp_path / "broken.safetensors").write_bytes(b"")
    with pytest.raises(core.ModelLoadError, match="empty"):
        run_node("VidSegLoadModel", model="checkpoints/broken.safetensors")
    with pytest.raises(core.DeviceError, match="fp16"):
        run_node("VidSegLoadModel", model="tiny-sd", precision="fp16", device="cpu")


# ------------------------------------------------------------------ label outputs
def hand_labels(coarse=False):
    lab = torch.zeros(T, H, W, dtype=torch.long)
    lab[:, :, 40:80] = 1
    lab[:, :, 80:] = 3
    table = labels_mod.LabelTable.from_values([0, 1, 3], {1: "swan", 3: "water"})
    if coarse:
        lab = lab[:, ::16, ::16].contiguous()
    return sockets.Labels(lab, table, (H, W), coarse, {"batch_size": 14, "seed": 1})


def test_select_labels_by_value_name_empty_invert_and_coarse():
    lab = hand_labels()
    (m,) = run_node("VidSegSelectLabels", labels=lab, select="1")
    assert m.shape == (T, H, W) and float(m.sum()) == T * H * 40
    (m2,) = run_node("VidSegSelectLabels", labels=lab, select="SWAN, 3")
    assert float(m2.sum()) == T * H * 88
    (empty,) = run_node("VidSegSelectLabels", labels=lab, select="")
    assert empty.shape == (T, H, W) and float(empty.sum()) == 0
    (absent,) = run_node("VidSegSelectLabels", labels=lab, select="7")
    assert absent.shape == (T, H, W) and float(absent.sum()) == 0
    (inv,) = run_node("VidSegSelectLabels", labels=lab, select="1", invert=True)
    assert torch.equal(inv, 1 - m)
    with pytest.raises(core.InputError, match="swan"):
        run_node("VidSegSelectLabels", labels=lab, select="duck")
    (mc,) = run_node("VidSegSelectLabels", labels=hand_labels(coarse=True), select="1")
    assert mc.shape == (T, H, W) and 0 < float(mc.mean()) < 1


def test_all_label_masks_are_label_major_and_cover_every_pixel_once():
    masks, count, names = run_node("VidSegAllLabelMasks", labels=hand_labels())
    assert count == 3 and masks.shape == (3 * T, H, W)
    assert torch.equal(masks.reshape(3, T, H, W).sum(0), torch.ones(T, H, W))
    assert float(masks[T:2 * T].sum()) == T * H * 40  # the second label (1, swan) is the second block
    assert names.splitlines()[1].startswith("1: swan")


def test_colorize_uses_the_stable_palette_and_blends_the_overlay():
    lab = hand_labels()
    color, over = run_node("VidSegColorizeLabels", labels=lab, alpha=0.25, frames=FRAMES)
    c1 = torch.tensor(labels_mod.palette_color(1)) / 255.0
    assert torch.allclose(color[:, :, 50], c1.expand(T, H, 3))
    assert torch.allclose(over, 0.75 * FRAMES + 0.25 * color, atol=1e-6)
    color2, over2 = run_node("VidSegColorizeLabels", labels=lab)
    assert torch.equal(color2, color) and torch.equal(over2, color)
    with pytest.raises(core.InputError):
        run_node("VidSegColorizeLabels", labels=lab, frames=FRAMES[:2])


def test_save_label_maps_never_overwrites(tmp_path, monkeypatch):
    import folder_paths
    from PIL import Image

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    lab = hand_labels()
    cls = NODES["VidSegSaveLabelMaps"]
    first = cls().save(lab, "clips/swan")
    second = cls().save(lab, "clips/swan")
    names1 = [i["filename"] for i in first["ui"]["images"]]
    names2 = [i["filename"] for i in second["ui"]["images"]]
    assert len(names1) == len(names2) == T and not set(names1) & set(names2)
    assert first["ui"]["images"][0]["subfolder"] == "clips" and first["result"] == ()
    arr = np.asarray(Image.open(tmp_path / "clips" / names1[0]))
    assert Image.open(tmp_path / "clips" / names1[0]).mode == "P"
    assert np.array_equal(arr, lab.labels[0].numpy())
    table = json.loads((tmp_path / "clips" / "swan_00001_labels.json").read_text())
    assert [e["name"] for e in table["label_table"]["entries"]] == ["label 0", "swan", "water"]
    with pytest.raises(core.InputError, match="outside"):
        cls().save(lab, "../escape")


def test_evaluate_reports_text_and_accepts_mask_or_label_image():
    gt = torch.zeros(T, H, W)
    gt[:, :, 40:80] = 1
    lab = hand_labels()
    binary = sockets.Labels((lab.labels == 1).long(), lab.table, (H, W), False, {})
    out = NODES["VidSegEvaluate"]().evaluate(binary, "miou,jf", ground_truth_mask=gt)
    assert out["ui"]["text"][0] == out["result"][0]
    res = json.loads(out["result"][1])
    assert res["miou"]["miou"] == 1.0 and res["jf"]["J&F-Mean"] == 1.0
    assert "mIoU 100.00" in out["result"][0]
    gt_img = lab.table.colorize(lab.labels).float() / 255.0  # palette colours -> ids 0, 1, 3
    out2 = NODES["VidSegEvaluate"]().evaluate(lab, "miou", ground_truth_labels=gt_img)
    assert json.loads(out2["result"][1])["miou"]["pixel_acc"] == 1.0
    with pytest.raises(core.InputError, match="exactly one"):
        NODES["VidSegEvaluate"]().evaluate(lab, "miou")
    with pytest.raises(core.InputError, match="shape"):
        NODES["VidSegEvaluate"]().evaluate(lab, "miou", ground_truth_mask=gt[:2])


# ------------------------------------------------------------------ references
def test_assign_labels_from_a_label_image_and_readable_reference_errors(model):
    (feats,) = run_node("VidSegExtractFeatures", model=model, frames=FRAMES)
    (clusters,) = run_node("VidSegKMeansInit", features=feats, num_clusters=4, n_init=2)
    ref = torch.zeros(1, H, W, dtype=torch.long)
    ref[:, :, :64] = 2
    img = labels_mod.LabelTable.from_values([0, 2]).colorize(ref).float() / 255.0
    named, info = run_node("VidSegAssignLabels", clusters=clusters, reference_labels=img, label_names="2: left")
    assert set(named.table.values) <= {0, 2} and named.table.kind == "label"
    assert "2" in info and clusters.assignment is None, "the input clusters are not modified"
    unnamed, info = run_node("VidSegAssignLabels", clusters=clusters)
    assert unnamed.table.kind == "cluster" and "no reference" in info
    with pytest.raises(core.InputError, match="empty"):
        run_node("VidSegAssignLabels", clusters=clusters, reference_mask=torch.zeros(1, H, W))
    with pytest.raises(core.InputError, match="Connect only one"):
        run_node("VidSegAssignLabels", clusters=clusters, reference_mask=MASKS[:1], reference_labels=img)
    with pytest.raises(core.InputError, match="clustered batch"):
        run_node("VidSegAssignLabels", clusters=clusters, frame_index=T + 3)
    with pytest.raises(core.InputError, match="palette"):
        run_node("VidSegAssignLabels", clusters=clusters, reference_labels=torch.rand(1, H, W, 3))


def test_cbr_refine_node_refines_given_labels_and_checks_them(model):
    (feats,) = run_node("VidSegExtractFeatures", model=model, frames=FRAMES)
    (clusters,) = run_node("VidSegKMeansInit", features=feats, num_clusters=3, n_init=2)
    none_ref, _ = run_node("VidSegCBRRefine", method="none")
    (coarse,) = run_node("VidSegKNNContextModel", features=feats, clusters=clusters, refiner=none_ref)
    _, same = run_node("VidSegCBRRefine", method="none", coarse_labels=coarse, features=feats)
    assert torch.equal(same.labels, coarse.labels) and same.labels is not coarse.labels
    refiner, refined = run_node("VidSegCBRRefine", method="cbr_compat", coarse_labels=coarse, features=feats)
    assert refined.labels.shape == coarse.labels.shape and "compat=True" in repr(refiner)
    assert set(refined.labels.unique().tolist()) <= set(coarse.labels.unique().tolist())
    with pytest.raises(core.InputError, match="both"):
        run_node("VidSegCBRRefine", coarse_labels=coarse)
    with pytest.raises(core.InputError, match="not coarse maps"):
        run_node("VidSegCBRRefine", coarse_labels=hand_labels(), features=feats)


def test_modulation_refuses_other_frames(model):
    with pytest.raises(core.InputError, match="not the frames"):
        run_node("VidSegMaskedModulation", model=model, frames=FRAMES[:3], coarse_labels=hand_labels(coarse=True))
