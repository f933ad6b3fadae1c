"""The real-ComfyUI tools' server command line: ``--cpu`` unless ``gpu``, extra arguments passed on
(``tools/comfy_server.py``, ``tools/run_real_checks.py``)."""
from __future__ import annotations

from tools import run_real_checks
from tools.comfy_server import ComfyServer


def test_server_runs_on_the_cpu_unless_gpu_is_asked(tmp_path):
    cpu = ComfyServer(tmp_path, "py", 8301).command()
    assert cpu[:3] == ["py", "main.py", "--cpu"]
    assert cpu[cpu.index("--port") + 1] == "8301"
    assert cpu[cpu.index("--temp-directory") + 1].endswith("vidseg_comfy_8301")  # a temp folder of its own
    gpu = ComfyServer(tmp_path, "py", 8301, ["--disable-dynamic-vram", "--disable-cuda-graphs"], gpu=True).command()
    assert "--cpu" not in gpu
    assert gpu[-2:] == ["--disable-dynamic-vram", "--disable-cuda-graphs"]
    own = ComfyServer(tmp_path, "py", 8301, ["--temp-directory", str(tmp_path)]).command()
    assert own.count("--temp-directory") == 1 and own[-1] == str(tmp_path)


def test_run_real_checks_passes_gpu_settings_on(tmp_path, monkeypatch):
    """``--gpu`` and repeated ``--server-args=--flag`` reach the server and the naming check's own server."""
    seen = {}

    def fake_run(name, cmd, out, env, timeout, cwd=None):
        seen[name] = [str(c) for c in cmd]
        return {"check": name, "result": "pass", "seconds": 0.0, "log": ""}

    class FakeServer:
        def __init__(self, *args, **kwargs):
            seen["server"] = ComfyServer(*args, **kwargs).command()

        def start(self):
            raise SystemExit("not started in a test")

    monkeypatch.setattr(run_real_checks, "run", fake_run)
    monkeypatch.setattr(run_real_checks, "comfy_identity", lambda d: {"version": "0.33.0", "commit": "x"})
    monkeypatch.setattr(run_real_checks, "banner", lambda ident: "ComfyUI 0.33.0")
    import tools.comfy_inputs
    import tools.comfy_server
    monkeypatch.setattr(tools.comfy_inputs, "prepare", lambda *a, **k: None)
    monkeypatch.setattr(tools.comfy_server, "ComfyServer", FakeServer)
    rc = run_real_checks.main(["--comfyui", str(tmp_path), "--models", str(tmp_path / "m"), "--out",
                               str(tmp_path / "out"), "--only", "naming", "boot", "--gpu",
                               "--server-args=--disable-dynamic-vram", "--server-args=--disable-cuda-graphs"])
    assert rc == 1  # the fake server never starts: boot fails, and says so
    assert "--cpu" not in seen["server"]
    assert seen["server"][-2:] == ["--disable-dynamic-vram", "--disable-cuda-graphs"]
    naming = seen["naming"]
    assert "--gpu" in naming
    assert naming[-2:] == ["--server-args=--disable-dynamic-vram", "--server-args=--disable-cuda-graphs"]
