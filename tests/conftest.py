"""Shared fixtures and the ComfyUI stand-ins.

The stand-ins (``folder_paths``, ``comfy.utils``, ``comfy.model_management``,
``comfy_api.latest``) are installed at import time, before any test imports the pack, unless a real
ComfyUI is already loaded.  They record progress and can simulate an interrupt,
so node tests exercise the same calls the real ComfyUI sees.
"""
from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.helpers.clip_folder import clip_folder  # noqa: E402

SHARED_DATA = clip_folder()

# Keep the tests strictly offline: any hub access must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# OpenMP threads sleep instead of spinning while they wait: on a busy 2-core machine spinning made the
# tiny-model tests 10x slower (node tests: 119 s -> 9 s under the same load); torch reads it at import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One torch thread unless the environment says otherwise: the models here are tiny, so splitting their
# operations over threads costs more than it gains (clean-clone .ci/run on 2 otherwise idle cores, one run
# each: pytest 350 s at torch's default 2 threads, 267 s at 1). Tests that need a thread count set it
# themselves (test_thread_determinism).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _install_comfy_stand_ins() -> None:
    if "folder_paths" in sys.modules:  # running inside real ComfyUI
        return
    import torch

    # one folder per pytest-xdist worker: two workers must not write each other's models or outputs
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    models_dir = Path(tempfile.gettempdir()) / f"vidseg_test_models{worker}"
    models_dir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.gettempdir()) / f"vidseg_test_output{worker}"

    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.supported_pt_extensions = {".ckpt", ".pt", ".bin", ".pth", ".safetensors"}
    fp.folder_names_and_paths = {
        "checkpoints": ([str(models_dir / "checkpoints")], set(fp.supported_pt_extensions)),
        "diffusers": ([str(models_dir / "diffusers")], {"folder"}),
    }

    def add_model_folder_path(name, path, is_default=False):
        paths, exts = fp.folder_names_and_paths.setdefault(name, ([], set()))
        if path not in paths:
            if is_default:
                paths.insert(0, path)
            else:
                paths.append(path)

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths.get(name, ([], set()))[0])

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths.get(name, ([], set()))
        found = []
        for base in paths:
            base = Path(base)
            if not base.is_dir():
                continue
            for p in sorted(base.rglob("*")):
                if p.is_file() and (not exts or p.suffix in exts):
                    found.append(str(p.relative_to(base)))
        return found

    def get_full_path(name, filename):
        for base in get_folder_paths(name):
            p = Path(base) / filename
            if p.exists():
                return str(p)
        return None

    def get_full_path_or_raise(name, filename):
        p = get_full_path(name, filename)
        if p is None:
            raise FileNotFoundError(f"Model in folder '{name}' with filename '{filename}' not found.")
        return p

    def get_output_directory():
        out_dir.mkdir(parents=True, exist_ok=True)
        return str(out_dir)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    fp.get_full_path_or_raise = get_full_path_or_raise
    fp.get_output_directory = get_output_directory
    fp.get_temp_directory = lambda: tempfile.gettempdir()
    fp.get_input_directory = lambda: tempfile.gettempdir()

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    mm = types.ModuleType("comfy.model_management")

    class ProgressBar:
        instances: list = []

        def __init__(self, total, node_id=None):
            self.total = total
            self.current = 0
            ProgressBar.instances.append(self)

        def update(self, value):
            self.current += value

        def update_absolute(self, value, total=None, preview=None):
            self.current = value
            if total is not None:
                self.total = total

    utils.ProgressBar = ProgressBar

    class InterruptProcessingException(Exception):
        pass

    mm.InterruptProcessingException = InterruptProcessingException
    mm.interrupt_after_checks = None  # tests set an int: raise after that many checks
    mm.interrupt_checks = 0

    def processing_interrupted():
        return mm.interrupt_after_checks is not None and mm.interrupt_checks >= mm.interrupt_after_checks

    def throw_exception_if_processing_interrupted():
        mm.interrupt_checks += 1
        if processing_interrupted():
            raise InterruptProcessingException()

    mm.processing_interrupted = processing_interrupted
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.vae_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda force=False: None
    mm.get_free_memory = lambda dev=None, torch_free_too=False: 8 * 1024**3
    mm.should_use_bf16 = lambda device=None, **kw: False
    mm.should_use_fp16 = lambda device=None, **kw: False
    mm.get_autocast_device = lambda dev: getattr(dev, "type", "cpu")
    #: every ModelPatcher handed to load_models_gpu, in order (the adapter's model-management calls)
    mm.loaded_models = []

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        mm.loaded_models.extend(models)

    mm.load_models_gpu = load_models_gpu

    # comfy.ldm.modules.attention.optimized_attention (the adapter's default attention in its replace patches)
    from tests.helpers.comfy_standin import optimized_attention

    ldm = types.ModuleType("comfy.ldm")
    ldm_modules = types.ModuleType("comfy.ldm.modules")
    attention = types.ModuleType("comfy.ldm.modules.attention")
    attention.optimized_attention = optimized_attention
    ldm.modules, ldm_modules.attention = ldm_modules, attention
    comfy.ldm = ldm
    for name, mod in (("comfy.ldm", ldm), ("comfy.ldm.modules", ldm_modules), ("comfy.ldm.modules.attention", attention)):
        sys.modules[name] = mod

    comfy.utils = utils
    comfy.model_management = mm
    # comfy_api.latest: ComfyUI's V3 node API, as 0.33 has it (tests switch profiles with comfy_api_standin.install)
    from tests.helpers.comfy_api_standin import install

    install("0.33")
    sys.modules["folder_paths"] = fp
    sys.modules["comfy"] = comfy
    sys.modules["comfy.utils"] = utils
    sys.modules["comfy.model_management"] = mm

    # the core VIDEO type (comfy_api ... VideoFromFile) and ExecutionBlocker
    from tests.helpers.comfy_video_standin import install as install_video

    install_video()


_install_comfy_stand_ins()


def _need(sub: str) -> Path:
    p = SHARED_DATA / sub
    if not p.is_dir():
        pytest.skip(f"test clips not found at {SHARED_DATA} ({sub}; docs/benchmarks.md#the-clips)")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real clips (skips cleanly when absent)."""
    return _need(".")


@pytest.fixture(scope="session")
def blackswan_dir() -> Path:
    return _need("blackswan")


@pytest.fixture(scope="session")
def bedroom_dir() -> Path:
    return _need("bedroom")


@pytest.fixture(scope="session")
def blackswan_frames(blackswan_dir):
    """The 14 blackswan frames as a float tensor [T,H,W,3] in 0..1 (854x480)."""
    import numpy as np
    import torch
    from PIL import Image

    files = sorted((blackswan_dir / "frames").glob("*.jpg"))
    arr = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return torch.from_numpy(arr).float() / 255.0


@pytest.fixture(scope="session")
def blackswan_masks(blackswan_dir):
    """masks_osvos 00000-00013 as palette indices, int64 [14,H,W]."""
    import numpy as np
    from PIL import Image

    files = sorted((blackswan_dir / "masks_osvos").glob("*.png"))[:14]
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int64)
