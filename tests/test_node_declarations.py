"""The nodes' declarations against the V1 interface saved workflows were made with.

* every node's ``/object_info`` entry equals the frozen V1 declaration
  (``tests/snapshots/v1_node_specs.json``, see :mod:`tests.helpers.node_specs`):
  same node ids, display names, categories, descriptions, input names / types /
  defaults / ranges / tooltips in the same order, same outputs in the same order;
* workflows saved with the V1 nodes (the bundled ones as they were, frozen in
  ``tests/snapshots/v1_saved_workflows.json``; never regenerated) still convert to
  the same API prompt, also with a widget converted to an input.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.helpers.node_specs import load_snapshot, pack_info
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


@pytest.mark.parametrize("stem", sorted(SAVED))
def test_a_workflow_saved_with_the_v1_nodes_gives_the_same_prompt(stem):
    saved = SAVED[stem]
    assert ui_to_api(copy.deepcopy(saved["workflow"]), pack_specs(PACK)) == saved["api"]


def test_a_widget_converted_to_an_input_in_a_v1_workflow_still_maps():
    """A V1-era save of Segment Video whose num_clusters widget was turned into an input fed by another node:
    the widget keeps its slot in widgets_values, the link wins, every later widget keeps its value."""
    saved = copy.deepcopy(SAVED["vidseg_fast_preview"])
    wf, expected = saved["workflow"], saved["api"]
    seg = next(n for n in wf["nodes"] if n["type"] == "VidSegSegmentVideo")
    link_id = 999
    seg["inputs"].append({"name": "num_clusters", "type": "INT", "widget": {"name": "num_clusters"}, "link": link_id})
    wf["links"].append([link_id, 77, 0, seg["id"], len(seg["inputs"]) - 1, "INT"])
    api = ui_to_api(wf, pack_specs(PACK))
    want = copy.deepcopy(expected[str(seg["id"])]["inputs"])
    want["num_clusters"] = ["77", 0]
    assert api[str(seg["id"])]["inputs"] == want
