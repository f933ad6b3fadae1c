"""The bundled example workflows (``workflows/*.json``, UI format) and the workflow tooling.

* every file is what ``python -m workflows.build`` generates from the current node declarations;
* node types are ours or core nodes as real ComfyUI servers reported them (``tools/comfy_specs/``);
* widget values have the right count, types and ranges; links are consistent;
* the UI -> API converter (docs/design/comfyui_integration.md#running-a-workflow-without-the-browser) gives complete prompts;
* every workflow has a small ``.jpg`` thumbnail.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.comfy_core_nodes import CORE_NODES
from tools.comfy_graph import (Graph, link_problems, required_missing, topological_order, ui_to_api,
                               widget_values_problems)
from tools.pack_loader import load_pack, pack_nodes, pack_specs

ROOT = Path(__file__).resolve().parents[1]
WF_DIR = ROOT / "workflows"
PACK = load_pack()
SPECS = pack_specs(PACK)
FILES = sorted(WF_DIR.glob("*.json"))


def _load(path):
    return json.loads(path.read_text())


def test_the_four_use_cases_are_bundled():
    stems = {p.stem for p in FILES}
    assert stems == {"vidseg_sd21_full_pipeline", "vidseg_svd_full_pipeline", "vidseg_mask_to_inpainting",
                     "vidseg_fast_preview"}


def test_files_are_what_the_builder_generates_from_the_current_nodes():
    from workflows.build import build_all

    built = build_all(SPECS, PACK)
    assert set(built) == {p.stem for p in FILES}
    for p in FILES:
        assert _load(p) == json.loads(json.dumps(built[p.stem])), \
            f"{p.name} is stale: run `python -m workflows.build`"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_workflow_is_valid_ui_format(path):
    wf = _load(path)
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in wf
    types = {n["type"] for n in wf["nodes"]}
    unknown = types - set(pack_nodes(PACK)) - set(CORE_NODES)
    assert not unknown, f"unknown node types {unknown}"
    assert any(t.startswith("VidSeg") for t in types)
    assert "LoadVideo" in types, "video comes in through core nodes"
    # the fast preview streams the VIDEO into Segment Video; the others take an IMAGE batch
    assert ("GetVideoComponents" in types) == (path.stem != "vidseg_fast_preview")
    for n in wf["nodes"]:
        assert n["properties"]["Node name for S&R"] == n["type"]
        assert n["properties"]["cnr_id"] == ("vidseg" if n["type"].startswith("VidSeg") else "comfy-core")
        assert n["mode"] == 0
    assert widget_values_problems(wf, SPECS) == []
    assert link_problems(wf, SPECS) == []
    ids = [n["id"] for n in wf["nodes"]]
    assert len(set(ids)) == len(ids) and wf["last_node_id"] == max(ids)
    assert wf["last_link_id"] == max(l[0] for l in wf["links"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_workflow_converts_to_a_complete_api_prompt(path):
    wf = _load(path)
    api = ui_to_api(wf, SPECS)
    assert len(api) == len(wf["nodes"])
    assert required_missing(api, SPECS) == []
    order = topological_order(api)
    assert len(order) == len(api)
    outputs = [k for k, n in api.items() if SPECS[n["class_type"]]["output_node"]]
    assert outputs, "a workflow needs an output node"
    # every VidSeg node's widget inputs are present with the node's own defaults where the builder kept them
    for n in api.values():
        if n["class_type"] == "VidSegExtractFeatures":
            assert n["inputs"]["seed"] == 1 and n["inputs"]["batch_size"] == 14
        if n["class_type"] == "VidSegLoadModel":
            assert n["inputs"]["precision"] == "auto"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_thumbnail_exists_and_is_small(path):
    from PIL import Image

    jpg = path.with_suffix(".jpg")
    assert jpg.is_file(), f"{jpg.name} missing"
    assert jpg.stat().st_size < 100_000
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size[0] >= 256


def test_workflow_contents_per_use_case():
    wfs = {p.stem: _load(p) for p in FILES}

    def types(stem):
        return [n["type"] for n in wfs[stem]["nodes"]]

    sd = types("vidseg_sd21_full_pipeline")
    for t in ("VidSegExtractFeatures", "VidSegKMeansInit", "VidSegAssignLabels", "VidSegCBRRefine",
              "VidSegKNNContextModel", "VidSegMaskedModulation", "LoadImage", "VidSegSaveLabelMaps"):
        assert t in sd
    # the core loaders feed the adapter by default; the fast preview keeps the pack's own loader
    svd_loader = next(n for n in wfs["vidseg_svd_full_pipeline"]["nodes"] if n["type"] == "ImageOnlyCheckpointLoader")
    assert "svd" in svd_loader["widgets_values"][0]
    for stem in ("vidseg_sd21_full_pipeline", "vidseg_svd_full_pipeline", "vidseg_mask_to_inpainting"):
        assert "VidSegModelFromComfy" in types(stem) and "VidSegLoadModel" not in types(stem), stem
    assert types("vidseg_mask_to_inpainting").count("CheckpointLoaderSimple") == 1  # one load serves both
    assert "VidSegLoadModel" in types("vidseg_fast_preview")
    adapter = {k: n for k, n in _api("vidseg_svd_full_pipeline").items() if n["class_type"] == "VidSegModelFromComfy"}
    (svd_adapter,) = adapter.values()
    assert set(svd_adapter["inputs"]) == {"model", "vae", "clip_vision", "compile"}  # compile: a widget
    inpaint = types("vidseg_mask_to_inpainting")
    assert {"VidSegSegmentVideo", "GrowMask", "SetLatentNoiseMask", "CheckpointLoaderSimple", "KSampler"} <= \
        set(inpaint)
    fast_api = _api("vidseg_fast_preview")
    fast = next(n for n in fast_api.values() if n["class_type"] == "VidSegSegmentVideo")
    assert fast["inputs"]["mode"] == "fast"
    # streamed: Load Video -> Segment Video's video input -> overlay_video -> Save Video, and label maps saved
    assert fast_api[fast["inputs"]["video"][0]]["class_type"] == "LoadVideo" and "frames" not in fast["inputs"]
    assert fast["inputs"]["float_outputs"] == "auto"  # = off for a VIDEO: nothing scales with the length
    seg_id = next(k for k, n in fast_api.items() if n is fast)
    save = next(n for n in fast_api.values() if n["class_type"] == "SaveVideo")
    assert save["inputs"]["video"] == [seg_id, 5]  # overlay_video
    labels = next(n for n in fast_api.values() if n["class_type"] == "VidSegSaveLabelMaps")
    assert labels["inputs"]["labels"] == [seg_id, 0]
    # the inpainting keeps the IMAGE / MASK path for its short clip
    inpaint_seg = next(n for n in api_inpaint().values() if n["class_type"] == "VidSegSegmentVideo")
    assert "frames" in inpaint_seg["inputs"] and "video" not in inpaint_seg["inputs"]
    # the propagated mask (not the overlay) feeds the inpainting chain
    api = _api("vidseg_mask_to_inpainting")
    grow = next(n for n in api.values() if n["class_type"] == "GrowMask")
    src = api[grow["inputs"]["mask"][0]]
    assert src["class_type"] == "VidSegSegmentVideo" and grow["inputs"]["mask"][1] == 1


def _api(stem):
    return ui_to_api(_load(WF_DIR / f"{stem}.json"), SPECS)


def api_inpaint():
    return _api("vidseg_mask_to_inpainting")


# ------------------------------------------------------------------ converter
def _small_graph():
    g = Graph(SPECS)
    vid = g.add("LoadVideo", widgets={"file": "clip.mp4"})
    comps = g.add("GetVideoComponents")
    g.link(vid, "VIDEO", comps, "video")
    ks = g.add("KSampler", widgets={"seed": 7, "steps": 3, "denoise": 0.5})
    video = g.add("CreateVideo", widgets={"fps": 12.0})
    g.link(comps, "images", video, "images")
    g.link(comps, "fps", video, "fps")  # a widget converted to an input
    return g, vid, comps, ks, video


def test_graph_writes_widget_values_in_frontend_order():
    g, vid, comps, ks, video = _small_graph()
    wf = g.to_ui()
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert nodes[vid]["widgets_values"] == ["clip.mp4", "image"]  # upload button value
    assert nodes[ks]["widgets_values"] == [7, "fixed", 3, 8.0, "euler", "simple", 0.5]  # seed control widget
    assert nodes[video]["widgets_values"] == [12.0]
    fps_input = next(i for i in nodes[video]["inputs"] if i["name"] == "fps")
    assert fps_input["widget"] == {"name": "fps"} and fps_input["link"] is not None
    assert nodes[comps]["order"] > nodes[vid]["order"]
    with pytest.raises(TypeError):
        g.link(comps, "fps", ks, "latent_image")
    with pytest.raises(KeyError):
        g.add("KSampler", widgets={"no_such_widget": 1})


def test_ui_to_api_follows_links_skips_control_values_and_muted_nodes():
    g, vid, comps, ks, video = _small_graph()
    wf = g.to_ui()
    api = ui_to_api(wf, SPECS)
    assert api[str(vid)] == {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}}
    assert api[str(video)]["inputs"] == {"images": [str(comps), 0], "fps": [str(comps), 2]}
    assert api[str(ks)]["inputs"] == {"seed": 7, "steps": 3, "cfg": 8.0, "sampler_name": "euler",
                                      "scheduler": "simple", "denoise": 0.5}
    wf["nodes"][2]["mode"] = 4  # bypassed
    assert str(ks) not in ui_to_api(wf, SPECS)
    assert required_missing(api, SPECS) == [f"node {ks} KSampler: required input {n} is missing"
                                            for n in ("model", "positive", "negative", "latent_image")]


def test_widget_checks_catch_wrong_count_type_range_and_combo():
    wf = _load(WF_DIR / "vidseg_fast_preview.json")
    seg = next(n for n in wf["nodes"] if n["type"] == "VidSegSegmentVideo")
    good = list(seg["widgets_values"])
    seg["widgets_values"] = good[:-1]
    assert any("widget values, expected" in p for p in widget_values_problems(wf, SPECS))
    seg["widgets_values"] = ["20"] + good[1:]
    assert any("not an integer" in p for p in widget_values_problems(wf, SPECS))
    seg["widgets_values"] = [0] + good[1:]
    assert any("outside 1..255" in p for p in widget_values_problems(wf, SPECS))
    seg["widgets_values"] = good[:1] + ["slow"] + good[2:]
    assert any("not one of" in p for p in widget_values_problems(wf, SPECS))
    seg["widgets_values"] = good
    assert widget_values_problems(wf, SPECS) == []
    wf["links"][0][5] = "MASK"
    assert link_problems(wf, SPECS)
