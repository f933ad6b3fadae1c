"""The nodes' declarations against the V1 interface saved workflows were made with.

* every node's ``/object_info`` entry equals the frozen V1 declaration
  (``tests/snapshots/v1_node_specs.json``, see :mod:`tests.helpers.node_specs`):
  same node ids, display names, categories, descriptions, input names / types /
  defaults / ranges / tooltips in the same order, same outputs in the same order;
* workflows saved with the V1 nodes (the bundled ones as they were, frozen in
  ``tests/snapshots/v1_saved_workflows.json``; never regenerated) still convert to
  the same API prompt, also with a widget converted to an input;
* the nodes are V3 nodes registered through ``comfy_entrypoint``, with search aliases
  and expert inputs marked ``advanced`` (a display hint: the widget and its value stay);
* where ComfyUI's node API lacks what the pack uses, the pack still loads and works,
  and says so: ComfyUI v0.3.64's V3 API (no ``advanced``, no ``search_aliases``, no
  output id equal to an input id, state set on node instances), no V3 API at all
  (V1 node classes), a V3 API that refuses the declarations (V1 node classes).
"""
from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import comfy_api_standin as api_standin
from tests.helpers import comfy_executor_standin as comfy
from tests.helpers.node_specs import load_snapshot, pack_info, server_node_info
from tools.comfy_graph import ui_to_api
from tools.pack_loader import load_pack, pack_specs

PACK = load_pack()
NODES = PACK.nodes
SAVED = json.loads((Path(__file__).resolve().parent / "snapshots" / "v1_saved_workflows.json").read_text())


def test_every_node_is_declared_as_the_v1_node_it_replaces():
    now = pack_info(NODES.NODE_CLASS_MAPPINGS, NODES.NODE_DISPLAY_NAME_MAPPINGS)
    before = load_snapshot()
    assert sorted(now) == sorted(before)
    for node_id in before:
        for key in before[node_id]:
            assert now[node_id][key] == before[node_id][key], f"{node_id}.{key} changed"


def _same_prompt(api: dict, saved_api: dict, specs: dict) -> None:
    """``api`` is ``saved_api`` plus, at most, optional widgets added since the save at their defaults (what the
    frontend sends for a value the file lacks)."""
    assert sorted(api) == sorted(saved_api)
    for key, node in api.items():
        old = saved_api[key]["inputs"]
        assert {k: v for k, v in node["inputs"].items() if k in old} == old, key
        optional = specs[node["class_type"]]["input"].get("optional", {})
        for name in set(node["inputs"]) - set(old):
            assert name in optional and node["inputs"][name] == optional[name][1].get("default"), (key, name)


@pytest.mark.parametrize("stem", sorted(SAVED))
def test_a_workflow_saved_with_the_v1_nodes_gives_the_same_prompt(stem):
    saved, specs = SAVED[stem], pack_specs(PACK)
    _same_prompt(ui_to_api(copy.deepcopy(saved["workflow"]), specs), saved["api"], specs)


def test_a_widget_converted_to_an_input_in_a_v1_workflow_still_maps():
    """A V1-era save of Segment Video whose num_clusters widget was turned into an input fed by another node:
    the widget keeps its slot in widgets_values, the link wins, every later widget keeps its value."""
    saved = copy.deepcopy(SAVED["vidseg_fast_preview"])
    wf, expected = saved["workflow"], saved["api"]
    seg = next(n for n in wf["nodes"] if n["type"] == "VidSegSegmentVideo")
    link_id = 999
    seg["inputs"].append({"name": "num_clusters", "type": "INT", "widget": {"name": "num_clusters"}, "link": link_id})
    wf["links"].append([link_id, 77, 0, seg["id"], len(seg["inputs"]) - 1, "INT"])
    specs = pack_specs(PACK)
    api = ui_to_api(wf, specs)
    want = copy.deepcopy(expected)
    want[str(seg["id"])]["inputs"]["num_clusters"] = ["77", 0]
    _same_prompt({str(seg["id"]): api[str(seg["id"])]}, {str(seg["id"]): want[str(seg["id"])]}, specs)


# ------------------------------------------------------------------ V3
#: expert inputs folded away by the 0.33 frontend until "Show advanced" (all have the paper's / authors' defaults)
ADVANCED = {
    "VidSegLoadModel": {"prediction_type", "compile"}, "VidSegModelFromComfy": {"compile"},
    "VidSegKMeansInit": {"n_init", "seed", "implementation"}, "VidSegAssignLabels": {"void_value"},
    "VidSegCBRRefine": {"radius_sq", "jump_threshold", "signed", "start_cells"},
    "VidSegKNNContextModel": {"n_neighbors", "implementation"},
    "VidSegMaskedModulation": {"filter_s", "blur_kernel", "compat", "absent_labels", "max_runs_per_chunk"},
    "VidSegGuidedUpsample": {"eps", "subsample", "softness"},
    "VidSegSegmentVideo": {"batch_size", "refiner", "kmeans", "link_threshold", "seam_overlap"},
    "VidSegDetectCuts": {"link_threshold", "seam_overlap", "batch_size", "threshold", "ratio", "window", "gradual",
                         "feature_collapse"},
}


def _advanced(info: dict) -> set:
    return {n for s, entries in info["input"].items() if s != "hidden" for n, e in entries.items()
            if e[1].get("advanced")}


def test_nodes_are_v3_nodes_registered_through_the_entrypoint():
    io = sys.modules["comfy_api.latest"].io
    api, classes, names = comfy.register_pack(PACK)
    assert api == "v3" and set(classes) == set(load_snapshot())
    for node_id, cls in classes.items():
        assert issubclass(cls, io.ComfyNode) and cls.GET_SCHEMA().node_id == node_id
        info = server_node_info(cls, node_id, names)
        assert _advanced(info) == ADVANCED.get(node_id, set()), node_id
        assert info["search_aliases"] and all(isinstance(a, str) and a for a in info["search_aliases"]), node_id
        for name in _advanced(info):  # folded away only: the widget (and its saved value) is still there
            entries = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
            assert entries[name][1].get("default") is not None
    hidden = {k: set(server_node_info(c, k, names)["input"].get("hidden", {})) for k, c in classes.items()}
    assert {k for k, h in hidden.items() if h} == {"VidSegSaveLabelMaps", "VidSegEvaluate"}  # V3 output nodes
    assert hidden["VidSegEvaluate"] == {"prompt", "extra_pnginfo"}


def _labels(pack_name: str):
    sockets = sys.modules[f"{pack_name}.nodes.sockets"]
    table = sys.modules[f"{pack_name}.vidseg_core.labels"].LabelTable.from_values([0, 1], {1: "swan"})
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    lab[:, :, 3:] = 1
    return sockets.Labels(lab, table, (8, 8), False, {})


def _run_select(pack_name: str, mappings: dict):
    (mask,), ui = comfy.run_node(mappings["VidSegSelectLabels"], labels=_labels(pack_name), select="swan",
                                 invert=False)
    assert ui is None and mask.shape == (2, 8, 8) and float(mask.sum()) == 2 * 8 * 5


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _pack_under(profile, name: str, break_schema: bool = False):
    """A fresh copy of the pack imported while ``comfy_api.latest`` is ``profile`` (None: absent);
    ``break_schema``: that API refuses every schema.  -> (pack, log lines, what ComfyUI registers from it)."""
    records, logger = _Records(), logging.getLogger("vidseg")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        with api_standin.swapped(profile):
            if break_schema:
                def refuse(self):
                    raise ValueError("schema refused by this API")
                sys.modules["comfy_api.latest"].io.Schema.validate = refuse
            pack = load_pack(name)
            registered = comfy.register_pack(pack, profile)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    return pack, records.lines, registered


@pytest.fixture(scope="module")
def pack_0364():
    return _pack_under("0.3.64", "vidseg_pack_v0364")


@pytest.fixture(scope="module")
def pack_without_v3():
    return _pack_under(None, "vidseg_pack_v1")


def test_on_comfyui_0_3_64_the_v3_nodes_load_without_the_newer_options(pack_0364):
    pack, lines, (api, classes, names) = pack_0364
    assert pack.nodes.API == "v3" and pack.nodes.FAILED_MODULES == {} and not hasattr(pack, "NODE_CLASS_MAPPINGS")
    assert any("no 'advanced' inputs" in line for line in lines) and any("no 'search_aliases'" in line for line in lines)
    assert api == "v3" and pack_info(classes, names) == load_snapshot()
    for node_id, cls in classes.items():
        info = server_node_info(cls, node_id, names)
        assert not _advanced(info) and "search_aliases" not in info
    # 0.3.64 refuses an output id equal to an input id: the outputs named like an input keep their displayed name
    assert server_node_info(classes["VidSegLoadModel"], "VidSegLoadModel", names)["output_name"] == ["model"]
    _run_select("vidseg_pack_v0364", classes)  # 0.3.64 sets state on new node instances: the work runs elsewhere


def test_without_a_v3_api_the_pack_registers_v1_nodes(pack_without_v3):
    pack, lines, (api, classes, names) = pack_without_v3
    assert pack.nodes.API == "v1" and pack.nodes.FAILED_MODULES == {} and not hasattr(pack, "comfy_entrypoint")
    assert any("no usable V3 node API" in line for line in lines)
    assert api == "v1" and classes == pack.nodes.NODE_CLASS_MAPPINGS and pack_info(classes, names) == load_snapshot()
    assert not any(hasattr(c, "GET_SCHEMA") for c in classes.values())
    _run_select("vidseg_pack_v1", classes)
    assert "outside" in comfy.validate(classes["VidSegSaveLabelMaps"], filename_prefix="../x")
    assert comfy.validate(classes["VidSegEvaluate"], metrics="miou,jf") is True
    assert classes["VidSegSegmentVideo"].SEARCH_ALIASES  # read by newer servers for V1 nodes too


def test_a_v3_api_that_refuses_the_declarations_falls_back_to_v1_nodes():
    pack, lines, (api, classes, names) = _pack_under("0.33", "vidseg_pack_refused", break_schema=True)
    assert pack.nodes.API == "v1" and len(pack.nodes.NODE_CLASS_MAPPINGS) == 16
    assert any(line.startswith("WARNING") and "schema refused by this API" in line and "V1 node API instead" in line
               for line in lines)
    assert api == "v1" and pack_info(classes, names) == load_snapshot()
    _run_select("vidseg_pack_refused", classes)


def test_model_inputs_point_to_the_recommended_loader_first():
    """Every VIDSEG_MODEL input names VidSeg Model from ComfyUI (the recommended path), not only the pack's loader."""
    seen = 0
    for node_id, info in pack_info(NODES.NODE_CLASS_MAPPINGS, NODES.NODE_DISPLAY_NAME_MAPPINGS).items():
        for entries in info["input"].values():
            for name, (kind, opts) in entries.items():
                if kind == "VIDSEG_MODEL" and "same backbone" not in opts["tooltip"]:
                    seen += 1
                    assert "VidSeg Model from ComfyUI" in opts["tooltip"], f"{node_id}.{name}"
    # Extract Block Features, Segment Video's model and namer (Masked Modulation: "the same backbone")
    assert seen == 3


def test_the_builder_uses_core_socket_classes_and_keeps_the_type_without_them():
    """A VIDEO input is ``io.Video`` where the API has it, else ``io.Custom("VIDEO")``: the same socket type."""
    schema = sys.modules[f"{PACK.__name__}.nodes.schema"]
    video = schema.Socket("video", "VIDEO", "A video from Load Video.", optional=True)
    io, _ = api_standin.build("0.33")
    built = schema.V3Builder(io).input(video)
    assert isinstance(built, io.Video.Input) and built.get_io_type() == "VIDEO" and built.optional
    del io.Video  # an API without the class
    built = schema.V3Builder(io).input(video)
    assert not isinstance(built, io.Image.Input) and built.get_io_type() == "VIDEO"
    assert schema.v1_entry(video) == ("VIDEO", {"tooltip": "A video from Load Video."})
    old, _ = api_standin.build("0.3.64")
    expert = schema.Int("n", 1, 0, 9, "An expert setting.", advanced=True)
    assert schema.V3Builder(io).input(expert).as_dict()["advanced"] is True
    assert "advanced" not in schema.V3Builder(old).input(expert).as_dict()  # 0.3.64 would refuse the keyword
    with pytest.raises(TypeError):
        old.Int.Input("n", advanced=True)
