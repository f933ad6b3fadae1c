"""Masked modulation: full-resolution label maps from coarse ones (paper §3.2, §4.3, Eqs 6-7).

Public entry point: :func:`modulate_batch` (one batch of frames, all labels and
both signs as runs of one batched computation).  See :mod:`.runner` for the
design, :mod:`.difference` for the difference-map pipeline and
:mod:`.unet_split` for the shared computation at the modulation step.
"""
from .difference import LabelArgmax, difference_map, gaussian_blur, rgb_distance, rgb_distance_wrapped
from .masks import lanczos_upsample_mask
from .runner import (ModulationCancelled, ModulationResult, labels_from_difference_maps, modulate_batch)
from .settings import ModulationPlan, ModulationSettings

__all__ = ["LabelArgmax", "ModulationCancelled", "ModulationPlan", "ModulationResult", "ModulationSettings",
           "difference_map", "gaussian_blur", "labels_from_difference_maps", "lanczos_upsample_mask",
           "modulate_batch", "rgb_distance", "rgb_distance_wrapped"]
