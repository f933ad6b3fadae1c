"""The adapters over ComfyUI: the only modules of the pack that import ComfyUI.

* :mod:`.bridge` -- ComfyUI's model management, progress bar, cancel, model folders, the node API;
* :mod:`.video` -- the core VIDEO type in and out (read batch by batch, written as files);
* :mod:`.native` (with :mod:`.native_base`, :mod:`.native_sd`, :mod:`.native_svd`, :mod:`.native_split`) --
  ComfyUI's own MODEL / VAE / CLIP as a VidSeg backbone (the core's backbone interface).

Everything else in ``nodes/`` reaches ComfyUI through these.
"""
