"""Naming in the dataset runner: VSPW's predicted names against the ground truth's class names (name_acc)."""
from helpers.datasets import make_vspw
from vidseg_core.dataset import DatasetRun, run_dataset
from vidseg_core.dataset.progress import RunFolder
from vidseg_core.dataset.protocol import JobConfig
from vidseg_core.naming.dataset_names import class_names, name_hits
from vidseg_core.naming.segmenter import NamingSettings
from vidseg_core.naming.vocabulary import load_vocabulary
from vidseg_core.pipeline import SegmentSettings


def test_name_hits_compare_best_words_with_class_names():
    names = class_names("vspw")
    assert len(names) == 124 and names[28] == "sky" and class_names("davis2017") is None
    rec = {"naming": {"labels": [{"value": 28, "word": "Sky"}, {"value": 60, "word": "tree"},
                                 {"value": 200, "word": "sky"}]}}
    assert name_hits(rec, names) == (1, 2)  # 200 is no class: not counted
    assert name_hits({}, names) == (0, 0)


def test_vspw_run_reports_name_accuracy_beside_miou(tmp_path, blackswan_dir):
    root = make_vspw(blackswan_dir, tmp_path / "VSPW", clips={"short": (4, 6, True)})
    # the reference gives labels 4 and 11 (raw 5 / 12): VSPW's "ladder" and "pillar"
    naming = NamingSettings(load_vocabulary("ladder, pillar, sky"))
    config = JobConfig(out="", model="tiny-sd", device="cpu", max_side=128, threads=1, naming=naming,
                       settings=SegmentSettings(num_clusters=4, batch_size=4, mode="fast"))
    res = run_dataset(DatasetRun(root=str(root), layout="vspw", out=str(tmp_path / "out"), config=config,
                                 quiet=True))
    assert res.exit_code == 0
    rec = RunFolder(tmp_path / "out").done_record("short")
    words = {lab["value"]: lab["word"] for lab in rec["naming"]["labels"]}
    assert set(words) <= {4, 11} and words and rec["naming"]["applied"] is False  # the reference names the labels
    right = sum(w == {4: "ladder", 11: "pillar"}[v] for v, w in words.items())
    d = res.scores["dataset"]
    assert "mIoU" in d and "names" in d["metrics"] and d["name_labels"] == len(words)
    assert d["name_acc"] == res.scores["videos"]["short"]["name_acc"] == right / len(words)
    assert "name_acc" in (tmp_path / "out" / "scores.csv").read_text().splitlines()[0]
