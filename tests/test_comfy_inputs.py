"""The example inputs the real-ComfyUI checks put into a ComfyUI folder (``tools/comfy_inputs.py``).

The clip has the asked length and size (frames looped), the first-frame PNG carries the object in its
alpha channel as the mask editor writes it, the core loaders get links to the random files, and a user's
own file is never overwritten.
"""
from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")  # ComfyUI's requirement; not one of the pack's
from PIL import Image  # noqa: E402

from tools import comfy_inputs  # noqa: E402


def _folder(tmp_path, n=3, size=(40, 24)):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(n):
        Image.fromarray(np.full((size[1], size[0], 3), 40 * i + 20, np.uint8)).save(d / f"{i:05d}.png")
    return d


def test_prepare_writes_clip_reference_and_links(tmp_path):
    comfy = tmp_path / "ComfyUI"
    models = tmp_path / "models"
    models.mkdir()
    (models / "vidseg_check_v2-1_512_random.safetensors").write_bytes(b"x")
    done = comfy_inputs.prepare(comfy, models, _folder(tmp_path), None, n=7, size=(64, 48))
    with av.open(str(done["video"])) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == 7 and frames[0].shape == (48, 64, 3)
    means = [int(round(fr.mean())) for fr in frames]
    assert abs(means[3] - means[0]) <= 3 and abs(means[1] - means[0]) > 20  # looped over the 3 files
    with Image.open(done["reference"]) as im:
        rgba = np.asarray(im)
    assert rgba.shape == (48, 64, 4) and 0 < (rgba[..., 3] == 0).mean() < 0.5  # the object: alpha 0
    link = comfy / "models" / "checkpoints" / "v2-1_512-ema-pruned.safetensors"
    assert link.is_symlink() and link.resolve() == (models / "vidseg_check_v2-1_512_random.safetensors").resolve()
    assert "svd_xt.safetensors" not in done  # its random file is not there yet: no dangling link
    comfy_inputs.prepare(comfy, models, None, None, n=2, size=(64, 48))  # its own files: rewritten


def test_prepare_never_overwrites_a_users_file(tmp_path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "input").mkdir(parents=True)
    mine = comfy / "input" / comfy_inputs.VIDEO
    mine.write_bytes(b"my video")
    with pytest.raises(SystemExit, match="not written by VidSeg"):
        comfy_inputs.prepare(comfy, tmp_path, None, None, n=2)
    assert mine.read_bytes() == b"my video"
