"""Masked modulation (paper §4.3) behind the :class:`~.base.Upsampler` interface."""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import InputError
from ..modulation import ModulationSettings, modulate_batch
from .base import UpsampleContext, Upsampler, check_upsample_inputs


class MaskedModulationUpsampler(Upsampler):
    """Quality mode: one batched modulation per call (the frames are one batch).

    Needs ``context.backbone``; ``context.inputs`` (the batch's BatchInputs) is
    reused when given, otherwise the frames are prepared and encoded here with
    ``context.seed`` (the backbone's seed by default).
    """

    name = "masked_modulation"

    def __init__(self, settings: Optional[ModulationSettings] = None):
        self.settings = settings or ModulationSettings()
        self.last_result = None

    def upsample(self, frames, coarse, label_ids=None, context: Optional[UpsampleContext] = None) -> torch.Tensor:
        coarse, ids = check_upsample_inputs(frames, coarse, label_ids)
        if context is None or context.backbone is None:
            raise InputError("Masked modulation needs the diffusion backbone.",
                             "Pass UpsampleContext(backbone=..., inputs=...) or use the guided-filter fast mode.")
        inputs = context.inputs
        if inputs is None:
            from ..features import prepare_batch

            inputs = prepare_batch(context.backbone, frames, context.seed)
        res = modulate_batch(context.backbone, inputs, coarse, ids, tuple(frames.shape[1:3]), self.settings,
                             context.progress, context.cancel, reference_store=context.reference_store)
        self.last_result = res
        return res.labels
