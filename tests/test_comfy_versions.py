"""The bundled workflows against every tested ComfyUI version's core node specs (captured from real servers).

* each snapshot in ``tools/comfy_specs/`` names its version, commit and frontend, holds every core node the
  workflows use, and no file of the machine it was captured on;
* every workflow file is valid for every version (a newer version's added optional widgets may be absent)
  and converts to the same API prompt on each, plus the defaults of those added widgets (what the newer
  frontend sends, e.g. Create Video's ``bit_depth`` in 0.33);
* a V3 dynamic combo (core Save Video's ``codec`` in newer ComfyUI) is a widget, and its chosen option's
  inputs follow it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.comfy_core_nodes import CORE_NODE_TYPES, load_core_specs, load_snapshot
from tools.comfy_core_nodes import tested_versions as _tested_versions
from tools.comfy_graph import (DYNAMIC_COMBO, Graph, link_problems, ordered_inputs, required_missing, ui_to_api,
                               widget_layout, widget_values_problems)
from tools.pack_loader import load_pack, pack_specs

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "workflows").glob("*.json"))
PACK = load_pack()
VERSIONS = _tested_versions()


def test_both_tested_versions_have_snapshots():
    assert {"0.3.64", "0.33.0"} <= set(VERSIONS)
    assert VERSIONS[0] == "0.3.64"  # the workflows are written against the oldest


@pytest.mark.parametrize("version", VERSIONS)
def test_snapshot_names_its_comfyui_and_holds_the_workflow_nodes(version):
    snap = load_snapshot(version)
    assert snap["comfyui_version"] == version and snap["commit"] and snap["frontend"]
    assert set(CORE_NODE_TYPES) <= set(snap["nodes"])
    text = json.dumps(snap)
    assert ".safetensors" not in text and ".mp4" not in text  # the capturing machine's files are dropped
    assert snap["nodes"]["LoadVideo"]["input"]["required"]["file"][1]["dynamic"] is True


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_workflow_is_valid_on_every_version(path, version):
    wf = json.loads(path.read_text())
    specs = pack_specs(PACK, version)
    assert widget_values_problems(wf, specs, missing_optional_ok=True) == []
    assert link_problems(wf, specs) == []
    api = ui_to_api(wf, specs)
    assert required_missing(api, specs) == []
    oldest = pack_specs(PACK, VERSIONS[0])
    base = ui_to_api(wf, oldest)
    for key, node in api.items():  # the same prompt, plus the defaults of widgets a newer version added
        known = {n for _, n, _ in ordered_inputs(oldest[node["class_type"]])}
        added = {k: v for k, v in node["inputs"].items() if k not in known}
        assert {k: v for k, v in node["inputs"].items() if k in known} == base[key]["inputs"]
        spec = dict((n, sp) for _, n, sp in ordered_inputs(specs[node["class_type"]]))
        assert all(v == spec[k][1].get("default") for k, v in added.items()), added


def test_a_missing_required_widget_value_is_still_a_problem():
    wf = json.loads((ROOT / "workflows" / "vidseg_mask_to_inpainting.json").read_text())
    scale = next(n for n in wf["nodes"] if n["type"] == "GrowMask")
    scale["widgets_values"] = scale["widgets_values"][:-1]  # tapered_corners: required
    assert widget_values_problems(wf, pack_specs(PACK), missing_optional_ok=True)


def _newest_save_video():
    specs = load_core_specs(VERSIONS[-1])
    codec = specs["SaveVideo"]["input"]["required"]["codec"]
    assert codec[0] == DYNAMIC_COMBO, "the newest tested version declares codec as a dynamic combo"
    return specs


def test_dynamic_combo_is_a_widget_in_the_prompt():
    specs = _newest_save_video()
    g = Graph(specs)
    save = g.add("SaveVideo", widgets={"filename_prefix": "vidseg/x"})
    wf = g.to_ui()
    assert wf["nodes"][0]["widgets_values"] == ["vidseg/x", "auto", "auto"]
    assert ui_to_api(wf, specs)[str(save)]["inputs"] == {"filename_prefix": "vidseg/x", "format": "auto",
                                                          "codec": "auto"}
    assert widget_values_problems(wf, specs) == []


def test_dynamic_combo_option_adds_its_inputs_after_it():
    specs = _newest_save_video()
    layout = widget_layout(specs["SaveVideo"], ["p", "auto", "h264", "re-encode", 20.0])
    assert [(n, r) for n, _, r in layout] == [("filename_prefix", "value"), ("format", "value"),
                                              ("codec", "value"), ("codec.encoding", "value"),
                                              ("codec.encoding.crf", "value")]
    g = Graph(specs)
    g.add("SaveVideo", widgets={"codec": "h264"})
    wf = g.to_ui()
    assert wf["nodes"][0]["widgets_values"] == ["video/ComfyUI", "auto", "h264", "auto"]
    assert ui_to_api(wf, specs)["1"]["inputs"]["codec.encoding"] == "auto"
    wf["nodes"][0]["widgets_values"] = ["video/ComfyUI", "auto", "mkv"]
    assert any("not one of ['auto', 'h264']" in p for p in widget_values_problems(wf, specs))


def test_a_widget_missing_from_the_file_gets_its_default_in_the_prompt():
    """0.33's frontend sends Create Video's new ``bit_depth`` (8) for a file saved before it existed."""
    specs = pack_specs(PACK, VERSIONS[-1])
    assert "bit_depth" in specs["CreateVideo"]["input"].get("optional", {})
    wf = json.loads((ROOT / "workflows" / "vidseg_mask_to_inpainting.json").read_text())
    video = next(n for n in wf["nodes"] if n["type"] == "CreateVideo")
    assert video["widgets_values"] == [30.0]  # written against the oldest version: fps only (linked)
    assert ui_to_api(wf, specs)[str(video["id"])]["inputs"]["bit_depth"] == 8
