"""Coarse -> full-resolution label maps behind one interface (:class:`Upsampler`).

* :class:`MaskedModulationUpsampler` — the paper's masked modulation (quality);
* :class:`GuidedFilterUpsampler` — colour guided filter on the coarse label
  probabilities (fast mode, no diffusion passes).
"""
from .base import UpsampleContext, Upsampler, check_upsample_inputs
from .guided import BOX_PRECISIONS, GuidedFilterUpsampler, box_mean, guided_filter_color
from .modulation import MaskedModulationUpsampler

UPSAMPLERS = {"masked_modulation": MaskedModulationUpsampler, "guided_filter": GuidedFilterUpsampler}


def make_upsampler(name: str, **options) -> Upsampler:
    """Build an upsampler by name (``masked_modulation`` or ``guided_filter``)."""
    from ..errors import InputError

    if name not in UPSAMPLERS:
        raise InputError(f"Unknown upsampler {name!r}.", f"Use one of {', '.join(UPSAMPLERS)}.")
    return UPSAMPLERS[name](**options)


__all__ = ["BOX_PRECISIONS", "GuidedFilterUpsampler", "MaskedModulationUpsampler", "UPSAMPLERS", "UpsampleContext", "Upsampler",
           "box_mean", "check_upsample_inputs", "guided_filter_color", "make_upsampler"]
