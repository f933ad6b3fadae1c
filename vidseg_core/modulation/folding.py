"""Decode-and-fold of one batch's finished ± pairs (paper §4.3, Eq 7's readout;
docs/design/authors_code.md#difference-maps-to-labels-as-published).

As soon as both modulated runs of label ``l`` are finished, :class:`PairFolder`
decodes them, reduces them to normalised difference maps (:mod:`.difference`),
filters them with the label's soft mask and folds them into a running argmax
(:class:`~.difference.LabelArgmax`), label by label in order, so memory does
not grow with the number of labels.  Frames that cannot differ are not decoded
(:meth:`PairFolder.zero_when_absent`); labels present in no frame fold a zero
map without any run.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import NumericalError
from .difference import LabelArgmax, difference_map, filter_maps, map_dtype
from .masks import lanczos_upsample_mask
from .memory import available_bytes, estimate_decode_frame_bytes, free_memory, is_out_of_memory
from .settings import ModulationPlan


class PairFolder:
    """The label argmax of one batch, fed with its finished ± pairs in label order.

    ``masks``: ``[L,T,h,w]`` coarse label masks (compute device); ``present``:
    ``[L,T]`` bool (CPU), is label ``l`` in frame ``t``, with ``present_host``
    its host copy; ``check_cancel()`` runs before each label, ``on_pair(l)``
    after each pair decoded (progress).
    """

    def __init__(self, backbone, plan: ModulationPlan, masks: torch.Tensor, present: torch.Tensor,
                 present_host: Sequence[Sequence[bool]], latent_hw: Tuple[int, int], frame_size: Tuple[int, int],
                 check_cancel: Callable[[], None], on_pair: Callable[[int], None]):
        self.backbone, self.plan, self.settings = backbone, plan, plan.settings
        self.masks, self.latent_hw, self.frame_size = masks, latent_hw, frame_size
        self.check_cancel, self.on_pair = check_cancel, on_pair
        dev = backbone.device
        self.L, self.T = masks.shape[0], masks.shape[1]
        self.active = [any(p) for p in present_host]  # labels present in at least one frame
        self.everywhere = [all(p) for p in present_host]  # labels present in every frame
        self.present_index = [present[l].nonzero().flatten().to(dev) for l in range(self.L)]
        self.absent = (~present).to(dev)
        self.dtype = map_dtype(self.settings.compat)  # float64 in compat modes: the authors' ties
        # compat modes assign labels on the CPU, as the authors (cv2, Pillow; float64, which MPS lacks)
        self.map_device = torch.device("cpu") if self.settings.compat != "none" else dev
        self.acc = LabelArgmax((self.T,) + tuple(frame_size), device=self.map_device, keep_maps=False,
                               dtype=self.dtype)
        self.maps: Optional[List[torch.Tensor]] = [] if self.settings.return_difference_maps else None
        self.decode_frames: Optional[int] = None  # frames per VAE call (None: decode_chunk)
        self.next_label = 0

    def fold(self, finished: Dict[int, torch.Tensor]) -> None:
        """Fold every label whose runs ``2l`` (+) and ``2l+1`` (−) are in ``finished`` (popped from it), in label
        order up to the first label still running (labels in no frame: zero maps)."""
        while self.next_label < self.L:
            l = self.next_label
            if not self.active[l]:
                zp = zm = None  # no offset anywhere: both runs are the reference, D = 0
            elif 2 * l in finished and 2 * l + 1 in finished:
                zp, zm = finished.pop(2 * l), finished.pop(2 * l + 1)
            else:
                break
            self.check_cancel()
            zp_given = zp is not None
            d = self._difference(l, zp, zm)
            del zp, zm
            if self.maps is not None:
                self.maps.append(d.detach() if d.device.type == "meta" else d.detach().cpu())
            soft = lanczos_upsample_mask(self.masks[l], self.frame_size, self.dtype).to(d.device)
            scores = filter_maps(d, soft, float(self.settings.filter_s))
            del d, soft
            if self.settings.absent_labels == "skip":
                absent = self.absent[l].to(scores.device)
                scores = torch.where(absent.view(-1, 1, 1), torch.full_like(scores, -math.inf), scores)
            self.acc.update(l, scores)
            del scores
            self.next_label += 1
            if zp_given:
                self.on_pair(l)

    def zero_when_absent(self) -> bool:
        """Is a frame where the label's mask is empty provably unchanged (so its difference is exactly 0)?

        SD: the UNet and the VAE treat frames independently, and such a frame
        gets no offset and the reference's q/k: it IS the reference.  SVD:
        only when blending resets it to the reference latent after the last
        step and frames are decoded one at a time (the authors' setting).
        """
        if self.backbone.family == "sd":
            return True
        w = self.plan.blend_window
        return w is not None and w[1] >= self.plan.last and getattr(self.backbone.config, "decode_chunk", None) == 1

    def _difference(self, l: int, zp: Optional[torch.Tensor], zm: Optional[torch.Tensor]) -> torch.Tensor:
        """Normalised difference maps ``[T,H,W]`` of label ``l``; frames that cannot differ are not decoded."""
        args = (self.frame_size, self.settings.blur_kernel, self.settings.blur_sigma, self.settings.compat)
        if zp is not None and (self.everywhere[l] or not self.zero_when_absent()):
            return difference_map(*self._decode_pair(zp, zm), *args)
        dev = self.map_device
        d = torch.zeros((self.T,) + tuple(self.frame_size), dtype=self.dtype, device=dev)
        if zp is not None and self.active[l]:
            i = self.present_index[l]
            d[i.to(dev)] = difference_map(*self._decode_pair(zp[i.to(zp.device)], zm[i.to(zm.device)]), *args).to(dev)
        return d

    def _decode_pair(self, zp: torch.Tensor, zm: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Both decodes of a ± pair as two clips of one :meth:`decode_clips`; on a GPU as many frames per VAE call
        as free memory allows (on the CPU ``decode_chunk`` frames a call, as :meth:`decode`)."""
        if self.decode_frames is None and self.backbone.device.type == "cuda":  # once per batch
            budget = available_bytes(self.backbone.device)
            per_frame = estimate_decode_frame_bytes(self.backbone, self.latent_hw)
            self.decode_frames = 2 * self.T if budget is None else max(1, min(2 * self.T, budget // max(1, per_frame)))
        try:
            out = self.backbone.decode_clips(torch.stack([zp, zm]), self.decode_frames)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled
            if not is_out_of_memory(exc) or zp.shape[0] == 1:
                raise
            free_memory()
            decode = self.backbone.decode
            out = torch.stack([torch.cat([decode(z[i:i + 1]) for i in range(z.shape[0])]) for z in (zp, zm)])
        return out[0], out[1]

    def labels(self, ids: torch.Tensor) -> torch.Tensor:
        """The label map ``[T,H,W]`` with values from ``ids`` (CPU); a NaN difference map is an error."""
        nan = self.acc.labels_with_nan()  # one host read per batch
        if nan:
            raise NumericalError(
                f"Masked modulation gave NaN difference maps for label(s) {[int(ids[i]) for i in nan]} "
                f"({str(self.backbone.dtype).replace('torch.', '')} on {self.backbone.device}): the computation "
                "overflowed.",
                "Run with precision 'bf16' or 'fp32' (fp16 can overflow), or check the model's weights.")
        labels = self.acc.labels(ids)
        if labels.device.type != "meta":  # meta tensors: FLOP counting (benchmarks/modulation.py)
            labels = labels.cpu()
        return labels

    def difference_maps(self) -> Optional[torch.Tensor]:
        """``[L,T,H,W]`` normalised, unfiltered maps (CPU) when the settings ask for them, else None."""
        return torch.stack(self.maps) if self.maps is not None else None
