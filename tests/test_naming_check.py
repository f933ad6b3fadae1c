"""The real-ComfyUI naming check's own parts (``tools/check_naming.py``), which CI can run without ComfyUI.

* its prompt names only inputs the nodes declare (the pack's, and the core nodes' of every tested version's
  captured specs), with every required input given;
* it reads back, from Segment Video's info, the words and scores the node wrote there
  (:func:`nodes.segment_naming.describe_naming`), below-threshold labels and phrases of several words included.
"""
from __future__ import annotations

import importlib

import pytest

from tools.check_naming import naming_prompt, names_from_info
from tools.comfy_core_nodes import tested_versions as _tested_versions
from tools.pack_loader import load_pack, pack_specs

PACK = load_pack()
describe_naming = importlib.import_module(PACK.__name__ + ".nodes.segment_naming").describe_naming


@pytest.mark.parametrize("version", _tested_versions())
def test_prompt_uses_declared_inputs_only(version):
    specs = pack_specs(PACK, version)
    prompt = naming_prompt("sky, water", clusters=4, seed=1, batch=14)
    checked = 0
    for node in prompt.values():
        spec = specs.get(node["class_type"])
        if spec is None:  # Preview Any: not among the captured core nodes
            assert not node["class_type"].startswith("VidSeg")
            continue
        declared = set(spec["input"].get("required", {})) | set(spec["input"].get("optional", {}))
        assert set(node["inputs"]) <= declared, (node["class_type"], set(node["inputs"]) - declared)
        assert set(spec["input"].get("required", {})) <= set(node["inputs"]), node["class_type"]
        checked += 1
    assert checked == len(prompt) - 1
    segment = next(n for n in prompt.values() if n["class_type"] == "VidSegSegmentVideo")
    assert segment["inputs"]["vocabulary"] == "sky, water" and segment["inputs"]["clip"] == ["3", 1]


def test_names_read_back_from_the_info():
    report = {"vocabulary": {"size": 3}, "threshold": 0.5, "namer": "comfy-sd21", "note": "",
              "labels": [{"value": 0, "word": "sky", "score": 0.8123, "named": True},
                         {"value": 3, "word": "traffic light", "score": 0.2, "named": False},
                         {"value": 12, "word": "water", "score": 0.5004, "named": True}]}
    info = "4 frames 64x64 with tiny-sd (fast), 3 labels\n" + "\n".join(describe_naming(report))
    assert names_from_info(info) == {0: ("sky", 0.812), 3: ("traffic light", 0.2), 12: ("water", 0.5)}


def test_info_without_names_is_refused():
    with pytest.raises(SystemExit, match="no names line"):
        names_from_info("4 frames 64x64 with tiny-sd (fast), 3 labels")
