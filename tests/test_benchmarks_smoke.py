"""Smoke test of ``benchmarks/run_all.py``: the cheapest benchmark (CBR) in quick mode on tiny inputs.

Checks the shape of the one table (columns, rows, ratios present), the file
written by ``--out`` and that a failing benchmark becomes an error row while
the others still run.  No timing assertions.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import report, run_all
from benchmarks.modulation import FlopCountingUnavailable, count, flop_counting_problem

ROOT = Path(__file__).resolve().parents[1]

#: FLOP tables need a FlopCounterMode that sees linear layers under inference_mode (not torch 2.5)
needs_flop_counter = pytest.mark.skipif(flop_counting_problem() is not None, reason=str(flop_counting_problem()))

HEADER = "| " + " | ".join(h for _, h in report.COLUMNS) + " |"


def _table_rows(text):
    lines = [l for l in text.splitlines() if l.startswith("|")]
    assert lines[0] == HEADER
    assert set(lines[1].strip("|").split("|")) == {"---"}
    return [[c.strip() for c in l.strip().strip("|").split(" | ")] for l in lines[2:]]


def test_every_benchmark_has_full_and_quick_settings():
    assert set(run_all.SETTINGS) == set(run_all.BENCHMARKS)
    for name, s in run_all.SETTINGS.items():
        assert set(s) == {"full", "quick"}, name


def test_quick_cbr_rows():
    rows, footer = run_all.run_benchmarks(["cbr"], quick=True, log=lambda m: None,
                                          overrides={"cbr": {"compat": False}})
    assert all(set(r) == {k for k, _ in report.COLUMNS} for r in rows)
    cases = [r["case"] for r in rows]
    assert cases.count("loop oracle, paper Eqs 3-5") >= 1
    assert cases.count("vectorised, paper Eqs 3-5") == cases.count("loop oracle, paper Eqs 3-5")
    assert not any("authors' variant" in c for c in cases)  # compat switched off by the override
    for r in rows:
        assert r["benchmark"] == "cbr" and r["measure"] == "s, median (min-max)"
        if r["case"].startswith("vectorised"):
            assert r["ratio"].endswith("faster than loop") and r["notes"] == "identical output: True"
        else:
            assert r["ratio"] == "1.00x (baseline, 1 rounds)" and "3 frames, 6x8 grid, 16 channels" in r["notes"]
    assert len(footer) == 1 and footer[0].startswith("- `cbr`: ok")


def test_flop_counting_refuses_a_torch_that_would_count_zero(monkeypatch):
    import benchmarks.modulation as m

    monkeypatch.setattr(m, "flop_counting_problem", lambda: "torch 2.5.1's FlopCounterMode counts no linear layer")
    with pytest.raises(FlopCountingUnavailable, match="counts no linear layer"):
        count(lambda: torch.nn.Linear(4, 4)(torch.zeros(1, 4)))


@needs_flop_counter
def test_quick_features_flops_rows_show_fewer_flops_for_both_architectures():
    rows, _ = run_all.run_benchmarks(["features_flops"], quick=True, log=lambda m: None)
    assert [r["benchmark"] for r in rows] == ["features: FLOPs SD 2.1"] * 2 + ["features: FLOPs SVD"] * 2
    for full, ours in (rows[0:2], rows[2:4]):
        assert full["ratio"] == "1.00x (baseline)" and ours["ratio"].endswith("x fewer")
        assert 0 < float(ours["value"]) < float(full["value"])


def test_main_prints_and_writes_one_table(tmp_path, capsys):
    out = tmp_path / "results" / "quick.md"
    assert run_all.main(["--quick", "--only", "cbr", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.strip("\n") + "\n"
    assert "Machine: " in text and " cores; torch " in text and " threads" in text and "Load average" in text
    assert "Total wall time:" in text and "QUICK" in text
    table = _table_rows(text)
    assert len(table) >= 4  # default and compat variant, loop and vectorised, at least one thread count
    assert {r[0] for r in table} == {"cbr"}
    assert all(len(r) == len(report.COLUMNS) for r in table)


def test_a_failing_benchmark_becomes_an_error_row(monkeypatch):
    def broken(cfg, log):
        raise RuntimeError("boom")

    monkeypatch.setitem(run_all.BENCHMARKS, "metrics", broken)
    rows, footer = run_all.run_benchmarks(["metrics", "cbr"], quick=True, log=lambda m: None,
                                          overrides={"cbr": {"compat": False}})
    assert rows[0]["benchmark"] == "metrics" and rows[0]["case"] == "FAILED" and "boom" in rows[0]["value"]
    assert any(r["benchmark"] == "cbr" for r in rows[1:])
    assert "FAILED" in footer[0] and "ok" in footer[1]


def test_memory_rows_explain_ru_maxrss_only_when_it_is_the_peak_source():
    rep = {"peak_source": "VmHWM", "ru_maxrss_mb": 7000, "ru_maxrss_mb_start": 7000}
    assert run_all._peak_source_note(rep) == "peak = VmHWM of the child"
    rep["peak_source"] = "ru_maxrss"
    assert run_all._peak_source_note(rep) == "peak = ru_maxrss (7000 MB, of which 7000 MB inherited from the parent at start)"


def test_unknown_benchmark_name_is_refused():
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nonexistent"])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_memory_child_peak_does_not_include_the_parents_memory():
    """The memory benchmark's children measure their own peak (VmHWM), not ru_maxrss inherited from a big parent."""
    ballast = bytearray(300 * 2**20)  # touched: 300 MB of RSS in this (parent) process
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from benchmarks import pipeline_memory as m; print(m._peak_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True)
    del ballast
    assert float(out.stdout.strip()) < 200


def test_dataset_rows_from_the_throughput_figures(monkeypatch):
    from benchmarks import dataset_throughput

    fake = {"videos": 4, "frames": 40, "size": [128, 72], "workers": 2, "cpus": 2, "ray_init": 3.0,
            "ray_shutdown": 1.2, "times": {"local": [10.0, 12.0, 11.0], "ray": [5.0, 8.0, 5.5]},
            "work": {"local": [9.0] * 3, "ray": [9.0] * 3}}
    monkeypatch.setattr(dataset_throughput, "run", lambda **kw: fake)
    rows = run_all.bench_dataset(run_all.SETTINGS["dataset"]["quick"], lambda m: None)
    assert [r["measure"] for r in rows] == ["videos/h", "videos/h", "time"]
    assert rows[0]["value"] == "1309" and rows[1]["value"] == "2618"  # 3600 * 4 / median time
    assert rows[1]["ratio"] == "2.00x (1.50-2.00)" and rows[2]["value"] == "3.00 s"


# ------------------------------------------------------------------ interleaved timing helper and the timing rows
def test_rounds_alternate_direction_and_ratios_are_paired_per_round():
    from benchmarks.timing import Samples, paired_ratios, ratio_text, round_order, time_cases

    assert round_order(["a", "b"], 4) == [["a", "b"], ["b", "a"], ["a", "b"], ["b", "a"]]
    assert round_order(["a", "b", "c"], 2) == [["a", "b", "c"], ["c", "b", "a"]]
    calls = []
    samples, kept = time_cases({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2},
                               repeats=3, per=2, warmup=True, keep=["b"])
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # warm-up, then A-B, B-A, A-B
    assert samples["a"].n == samples["b"].n == 3 and kept == {"b": 2}
    assert all(c >= 0 for c in samples["a"].cpu) and not samples["a"].device  # no CUDA events off CUDA
    slow, fast = Samples("x", wall=[2.0, 4.0, 6.0], cpu=[1.0] * 3), Samples("y", wall=[1.0, 1.0, 3.0], cpu=[1.0] * 3)
    assert paired_ratios(slow, fast) == [2.0, 4.0, 2.0]
    assert ratio_text(slow, fast) == "2.00x (2.00-4.00)"
    assert slow.text() == "4.000 (2.000-6.000)"
    with pytest.raises(ValueError):
        time_cases({"a": lambda: None}, repeats=0)


def test_quick_pipeline_rows_compare_whole_pipelines_against_the_sequential_oracle(blackswan_dir):
    from benchmarks.pipeline_speed import CASE_NAMES

    rows, footer = run_all.run_benchmarks(["pipeline"], quick=True, log=lambda m: None, data=blackswan_dir.parent)
    assert "ok" in footer[0], footer
    by_case = {r["case"]: r for r in rows}
    assert list(by_case)[0] == CASE_NAMES["oracle"] and by_case[CASE_NAMES["oracle"]]["ratio"].startswith("1.00x")
    assert set(by_case) == set(CASE_NAMES.values())
    quality = by_case[CASE_NAMES["quality"]]
    assert quality["ratio"].endswith("faster") and "labels agree with the oracle's on" in quality["notes"]
    assert all(r["measure"] == "s/frame, median (min-max)" and "CPU" in r["notes"] for r in rows)


def test_quick_modulation_rows_are_the_modulation_stage_on_both_sides():
    rows, footer = run_all.run_benchmarks(["modulation"], quick=True, log=lambda m: None)
    assert "ok" in footer[0], footer
    assert [r["case"] for r in rows] == ["sequential oracle", "batched (one chunk)"]
    assert "modulation stage only on both sides" in rows[0]["notes"]
    assert rows[1]["ratio"].endswith("faster") and "labels agree with the oracle" in rows[1]["notes"]


@needs_flop_counter
def test_quick_pipeline_flops_rows_have_the_same_scope_on_both_sides():
    rows, footer = run_all.run_benchmarks(["pipeline_flops"], quick=True, log=lambda m: None)
    assert "ok" in footer[0], footer
    for arch in ("SD 2.1",):  # quick: SD only (the SVD counts take a minute)
        mine = [r for r in rows if r["benchmark"] == f"pipeline: FLOPs {arch}"]
        assert mine[0]["case"].startswith("authors' quality mode") and mine[0]["ratio"] == "1.00x (baseline)"
        authors = float(mine[0]["value"])
        fast = next(r for r in mine if "fast mode" in r["case"])
        cpu = next(r for r in mine if "CPU default" in r["case"])
        cuda = next(r for r in mine if "CUDA default" in r["case"])
        # the whole quality mode includes the feature pass: above the fast mode (and, one chunk, below the authors')
        assert float(fast["value"]) < min(float(cpu["value"]), float(cuda["value"]))
        assert max(float(cpu["value"]), float(cuda["value"])) <= authors


def test_gpu_benchmark_runs_on_the_cpu_with_the_tiny_backbones(tmp_path, blackswan_dir):
    """In bf16, the GPU run's precision (``--dtype bf16``): a dtype mismatch anywhere would end that run."""
    from benchmarks import gpu

    out = tmp_path / "out"
    assert gpu.main(["--device", "cpu", "--tiny", "--families", "sd21", "--num-frames", "2", "--max-side", "128",
                     "--repeats", "1", "--labels", "2", "--frames", str(blackswan_dir / "frames"),
                     "--dtype", "bf16", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    for case in ("feature pass", "fast mode", "quality mode (batched)", "sequential oracle", "UNet evaluation"):
        assert case in table
    assert "batched vs sequential oracle (whole pipeline, paired rounds)" in table
    assert "one quality batch: UNet" in table
    assert "matrix product 512x512 bfloat16" in (out / "log.txt").read_text()
    assert "tiny-sd bfloat16 on cpu" in (out / "log.txt").read_text()
    import json

    res = json.loads((out / "result.json").read_text())
    assert res["results"][0]["samples"]["quality"]["n"] == 1
    # SD: the modulation alone at a presence below 1, rows skipped vs whole runs: same labels, fewer FLOPs
    assert "absent (label, frame) rows skipped" in table and "labels equal: True" in table
    flops = res["results"][0]["flops"]
    if flop_counting_problem() is None:
        assert flops["quality"] > 0 and 0 < flops["mod_rows"] < flops["mod_whole"]
    else:  # timed all the same, and the log says why the FLOP columns are empty
        assert flops == {} and "FLOPs not counted" in (out / "log.txt").read_text()
    assert res["results"][0]["profile"]["VAE decode"] > 0  # the modulation decodes through decode_clips
    assert res["results"][0]["presence"]["present"] < 1


def test_gpu_benchmark_compile_reports_what_compilation_did(tmp_path, blackswan_dir, monkeypatch):
    """``--compile``: the table says whether compilation stayed active, and how many pixels of the compiled
    quality labels differ from one eager run (compilation stood in for by a pass-through: the report is tested,
    not inductor)."""
    import torch

    from benchmarks import gpu
    from vidseg_core import compile as vcompile

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(vcompile, "inductor_available", lambda device: None)
    out = tmp_path / "out"
    assert gpu.main(["--device", "cpu", "--tiny", "--families", "sd21", "--num-frames", "2", "--max-side", "128",
                     "--repeats", "1", "--labels", "2", "--presence", "0", "--no-profile", "--compile",
                     "--frames", str(blackswan_dir / "frames"), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "compiled (inductor): 46 regions, active True, fallback None, recompile-limit hits 0" in table, table
    assert "quality labels differ from one eager run in 0 of " in table
    import json

    info = json.loads((out / "result.json").read_text())["results"][0]["compile"]
    assert info["labels_differ_from_eager"][0] == 0 and info["labels_differ_from_eager"][1] > 0


def test_gpu_benchmark_counts_the_syncs_cuda_reports(monkeypatch):
    """``count_syncs`` turns CUDA's sync-debug warnings into a count (faked here: no GPU) and restores the mode."""
    import types
    import warnings

    import torch

    from benchmarks import gpu

    modes = ["default"]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda m: modes.append(m))

    def batch():
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation")
        warnings.warn("something else")
    assert gpu.count_syncs(batch, types.SimpleNamespace(type="cuda")) == 3
    assert modes == ["default", "warn", 0]
    assert gpu.count_syncs(batch, torch.device("cpu")) is None


def test_precision_study_matches_ids_and_runs_on_tiny_sd(blackswan_dir, capsys):
    from benchmarks import precision

    a = torch.tensor([[0, 0, 1], [1, 2, 2]])
    assert precision.matched_agreement(a, (a + 1) % 3 + 5) == 1.0  # renumbered: the same partition
    assert precision.matched_agreement(a, torch.zeros_like(a)) == pytest.approx(2 / 6)
    assert precision.main(["--models", "tiny-sd", "--precisions", "bf16", "--num-frames", "1", "--max-side", "128",
                           "--labels", "3", "--frames", str(blackswan_dir / "frames")]) == 0
    rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| tiny-sd")]
    assert [r.split(" | ")[1] for r in rows] == ["fp32", "bf16"]
    fp32, bf16 = ([float(c.strip(" |%")) for c in r.split(" | ")[2:]] for r in rows)
    assert fp32[2] > 99.9  # fp32: the batched modulation agrees with the sequential oracle (near-ties aside)
    assert len(bf16) == 5 and all(0 < v <= 100 for v in bf16)  # modulation and whole pipeline, both compared


def test_encode_memory_reports_each_chunk_and_compares_latents(capsys):
    from benchmarks import encode_memory

    encode_memory.main(["--size", "64", "64", "--frames", "3", "--chunks", "2", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny-sd, 3 frames 64x64")
    assert lines[1].startswith("  2 frame(s) a VAE call: high-water mark +") and "bitwise equal" in lines[1]
    assert lines[2].startswith("  3 frame(s) a VAE call: high-water mark +") and "latents vs 2 a call" in lines[2]
