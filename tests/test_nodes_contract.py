"""The ComfyUI node contract of every VidSeg node (docs/design/comfyui_integration.md#the-node-contract, #testing-without-comfyui), without ComfyUI.

The pack is imported the way ComfyUI does it (a package from the repo root's
``__init__.py``, relative imports), with the stand-ins of ``conftest.py``
(``comfy_api.latest`` as in ComfyUI 0.33: the nodes are V3 nodes, registered
through ``comfy_entrypoint``).  Inputs and outputs are read as ComfyUI's server
reads them (``INPUT_TYPES`` / ``RETURN_TYPES`` ..., which a V3 node derives from
its schema); the work method is the one the declaration names.
"""
from __future__ import annotations

import inspect
import sys

import pytest

from tests.helpers import comfy_executor_standin as standin
from tools.comfy_graph import combo_options, has_control_widget, input_kind
from tools.pack_loader import load_pack

PACK = load_pack()
NODES = dict(PACK.nodes.NODE_CLASS_MAPPINGS)
NODES_PKG = sys.modules["vidseg_pack.nodes"]
SOCKETS = sys.modules["vidseg_pack.nodes.sockets"]

WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")
CORE_SOCKETS = ("IMAGE", "MASK", "VIDEO", "MODEL", "VAE", "CLIP", "CLIP_VISION")  # the last four: the adapter's inputs
CUSTOM = tuple(SOCKETS.CUSTOM_TYPES)

#: the design card's stage nodes and the ones around them (issue: node pack)
EXPECTED = {
    "VidSegModelFromComfy", "VidSegLoadModel", "VidSegExtractFeatures", "VidSegKMeansInit", "VidSegKNNContextModel", "VidSegCBRRefine",
    "VidSegMaskedModulation", "VidSegAssignLabels", "VidSegGuidedUpsample", "VidSegSegmentVideo",
    "VidSegSelectLabels", "VidSegAllLabelMasks", "VidSegColorizeLabels", "VidSegSaveLabelMaps", "VidSegEvaluate",
    "VidSegDetectCuts",
}


def test_pack_exports_every_node_and_nothing_failed():
    assert set(NODES) == EXPECTED
    assert NODES_PKG.FAILED_MODULES == {}
    assert set(NODES_PKG.NODE_DISPLAY_NAME_MAPPINGS) == set(NODES)
    assert PACK.WEB_DIRECTORY is None
    assert all(name.endswith("(VidSeg)") or "VidSeg" in name for name in NODES_PKG.NODE_DISPLAY_NAME_MAPPINGS.values())
    # ComfyUI reads NODE_CLASS_MAPPINGS first and would then never call comfy_entrypoint: only the entrypoint is there
    assert NODES_PKG.API == "v3" and not hasattr(PACK, "NODE_CLASS_MAPPINGS")
    api, classes, names = standin.register_pack(PACK)
    assert api == "v3" and classes == NODES and names == NODES_PKG.NODE_DISPLAY_NAME_MAPPINGS


def _inputs(cls):
    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"}, types.keys()
    for section in ("required", "optional"):
        for name, entry in types.get(section, {}).items():
            yield section, name, entry


@pytest.mark.parametrize("node_id", sorted(EXPECTED))
def test_declaration(node_id):
    cls = NODES[node_id]
    assert node_id.startswith("VidSeg")
    assert cls.CATEGORY == "VidSeg" or cls.CATEGORY.startswith("VidSeg/")
    assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION, None))
    work = getattr(cls, cls.declare().function)
    assert isinstance(cls.RETURN_TYPES, (tuple, list))
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    assert all(isinstance(t, str) and t for t in cls.OUTPUT_TOOLTIPS)
    assert all(t in CORE_SOCKETS + WIDGETS + CUSTOM for t in cls.RETURN_TYPES), cls.RETURN_TYPES
    assert len(set(cls.RETURN_NAMES)) == len(cls.RETURN_NAMES)
    assert bool(getattr(cls, "OUTPUT_NODE", False)) == (node_id in ("VidSegSaveLabelMaps", "VidSegEvaluate"))
    assert not hasattr(cls, "IS_CHANGED"), "pure functions of their inputs: ComfyUI's cache is right"
    assert standin.first_real_override(cls, "fingerprint_inputs") is None, "no V3 IS_CHANGED either"
    assert standin.first_real_override(cls, "check_lazy_status") is None
    params = inspect.signature(work).parameters
    for section, name, entry in _inputs(cls):
        where = f"{node_id}.{name}"
        assert isinstance(entry, tuple) and len(entry) == 2, where
        kind, opts = entry
        assert isinstance(opts.get("tooltip"), str) and len(opts["tooltip"]) > 10, f"{where}: tooltip"
        assert name in params, f"{where}: not a parameter of {work.__name__}"
        if section == "optional":
            assert params[name].default is not inspect.Parameter.empty, f"{where}: optional without a default"
        if input_kind(entry) == "COMBO":
            options = combo_options(entry)
            assert options and all(isinstance(o, str) for o in options), where
            assert opts.get("default", options[0]) in options, where
            continue
        assert kind in WIDGETS + CORE_SOCKETS + CUSTOM, f"{where}: unknown type {kind}"
        if kind in ("INT", "FLOAT"):
            for key in ("default", "min", "max", "step"):
                assert key in opts, f"{where}: {key}"
            assert opts["min"] <= opts["default"] <= opts["max"], where
            if kind == "INT":
                assert all(isinstance(opts[k], int) for k in ("default", "min", "max", "step")), where
            if name == "seed":  # fixed seeds: no "randomize" control widget
                assert opts.get("control_after_generate") is False, where
                assert not has_control_widget(name, [kind, opts])
        elif kind == "BOOLEAN":
            assert isinstance(opts["default"], bool), where
        elif kind == "STRING":
            assert isinstance(opts["default"], str), where
    validate = standin.first_real_override(cls, "validate_inputs")
    if validate is not None:  # only widget inputs, True for the defaults
        vparams = inspect.signature(validate).parameters
        widgets = {n: e[1].get("default") for _, n, e in _inputs(cls) if input_kind(e) in WIDGETS + ("COMBO",)}
        assert set(vparams) <= set(widgets), node_id
        assert validate(**{n: widgets[n] for n in vparams}) is True
        assert standin.validate(cls, **widgets) is True
    # a keyword-only run never needs a parameter that is not an input
    names = {n for _, n, _ in _inputs(cls)}
    extra = [p for p in params if p != "self" and p not in names]
    assert not extra, f"{node_id}: parameters {extra} are not inputs"


def test_every_custom_input_type_is_produced_by_some_node():
    produced = {t for c in NODES.values() for t in c.RETURN_TYPES}
    consumed = {e[0] for c in NODES.values() for _, _, e in _inputs(c) if isinstance(e[0], str)}
    assert {t for t in consumed if t in CUSTOM} <= produced
    assert set(CUSTOM) <= produced | consumed


def test_compute_nodes_take_keep_model_loaded_and_default_to_offloading():
    for node_id, cls in NODES.items():
        names = dict((n, e) for _, n, e in _inputs(cls))
        if "model" in names and names["model"][0] == SOCKETS.VIDSEG_MODEL:
            assert names["keep_model_loaded"][1]["default"] is False, node_id


def test_loader_lists_checkpoint_and_diffusers_models_with_tiny_models_last(tmp_path, monkeypatch):
    import folder_paths

    ck, df, vs = tmp_path / "checkpoints", tmp_path / "diffusers", tmp_path / "vidseg"
    (ck / "sub").mkdir(parents=True)
    for name in ("zzz_other.safetensors", "sub/v2-1_512-ema-pruned.safetensors", "notes.txt"):
        (ck / name).write_bytes(b"")
    (df / "stable-video-diffusion-img2vid").mkdir(parents=True)
    (df / "stable-video-diffusion-img2vid" / "model_index.json").write_text("{}")
    (df / "loose.safetensors").write_bytes(b"")  # single files are not diffusers models
    vs.mkdir()
    (vs / "svd_xt.safetensors").write_bytes(b"")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "checkpoints", ([str(ck)], set()))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusers", ([str(df)], {"folder"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vidseg", ([str(vs)], set()))
    options = combo_options(NODES["VidSegLoadModel"].INPUT_TYPES()["required"]["model"])
    assert options == ["checkpoints/sub/v2-1_512-ema-pruned.safetensors", "diffusers/stable-video-diffusion-img2vid",
                       "vidseg/svd_xt.safetensors", "checkpoints/zzz_other.safetensors", "tiny-sd", "tiny-svd"]


def test_pack_registers_its_model_folder():
    import folder_paths

    paths = folder_paths.get_folder_paths("vidseg")
    assert any(p.replace("\\", "/").endswith("/vidseg") for p in paths)


def test_one_broken_module_does_not_take_the_pack_down(monkeypatch, caplog):
    monkeypatch.setattr(NODES_PKG, "NODE_MODULES", ("does_not_exist", "select_labels"))
    monkeypatch.setattr(NODES_PKG, "NODE_CLASS_MAPPINGS", {})
    monkeypatch.setattr(NODES_PKG, "NODE_DISPLAY_NAME_MAPPINGS", {})
    monkeypatch.setattr(NODES_PKG, "FAILED_MODULES", {})
    with caplog.at_level("WARNING", logger="vidseg"):
        api, entrypoint = NODES_PKG._load()
    assert set(NODES_PKG.NODE_CLASS_MAPPINGS) == {"VidSegSelectLabels", "VidSegAllLabelMasks"}
    assert api == "v3" and entrypoint is not None
    assert "does_not_exist" in NODES_PKG.FAILED_MODULES
    assert "1 module(s) failed" in caplog.text


def test_nodes_keep_no_state_and_core_never_imports_comfy():
    import pathlib
    import re

    root = pathlib.Path(PACK.__file__).parent
    for f in (root / "vidseg_core").rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"^\s*(import|from)\s+(comfy|folder_paths)\b", text, re.M), f
    # only the adapters sub-package imports ComfyUI; the node modules reach it through the adapters
    for f in (root / "nodes").glob("*.py"):
        text = f.read_text()
        assert not re.search(r"^\s*(import|from)\s+(comfy|comfy_api|folder_paths)\b", text, re.M), f
        if f.name == "schema.py":  # the builder of the node classes
            continue
        assert not re.search(r"self\.\w+\s*=", text), f"{f.name}: node methods must not keep state on the instance"
        assert not re.search(r"^\s*global\s", text, re.M), f"{f.name}: no module-level state"
    adapters = {f.name for f in (root / "nodes" / "comfy_adapters").glob("*.py")}
    assert {"bridge.py", "video.py", "native.py"} <= adapters
    assert not list((root / "nodes").glob("comfy_*.py")), "ComfyUI adapters belong in nodes/comfy_adapters/"


def test_validate_inputs_reject_bad_values_before_running():
    assert "outside" in standin.validate(NODES["VidSegSaveLabelMaps"], filename_prefix="../../etc/x")
    assert standin.validate(NODES["VidSegSaveLabelMaps"], filename_prefix="clips/run") is True
    assert "Unknown" in standin.validate(NODES["VidSegEvaluate"], metrics="miou,accuracy")


#: the ComfyUI versions the pack's real-ComfyUI checks ran on (oldest first)
TESTED_COMFYUI = ("0.3.64", "0.33.0")
#: the [project.urls] keys ComfyUI's pyproject parser and the Comfy Registry read
REGISTRY_URL_KEYS = {"Homepage", "Documentation", "Repository", "Issues"}


def test_pyproject_is_ready_for_the_comfy_registry():
    import pathlib
    import tomllib

    from PIL import Image

    specifiers = pytest.importorskip("packaging.specifiers")
    root = pathlib.Path(PACK.__file__).parent
    cfg = tomllib.loads((root / "pyproject.toml").read_text())
    comfy, urls = cfg["tool"]["comfy"], cfg["project"]["urls"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy["Icon"]
    assert icon.startswith("https://raw.githubusercontent.com/") and "/main/" in icon, "Icon must be a URL"
    path = root / icon.split("/main/", 1)[1]
    with Image.open(path) as im:  # the file the URL serves once pushed
        assert im.size[0] == im.size[1] >= 256
    wanted = specifiers.SpecifierSet(comfy["requires-comfyui"])
    assert all(v in wanted for v in TESTED_COMFYUI) and "0.3.63" not in wanted, "the floor is the oldest tested"
    assert set(urls) == REGISTRY_URL_KEYS and all(u.startswith("https://") for u in urls.values())
    assert urls["Issues"].endswith("/issues")
