"""The one backbone interface (SD 2.1, SVD and their tiny test twins).

A backbone turns frames into latents, runs the authors' deterministic Euler
sampler from step ``t`` to the end with classifier-free guidance, decodes
latents, and exposes its decoder attention layers as hook points
(:mod:`.attention`).  The sampler loop itself lives here, once, in σ-space as
the authors' ``EulerEDMSampler`` with ``s_churn = 0`` (docs/design/authors_code.md#effective-settings):

    D_i = denoise(x_i, σ_i);   x_{i+1} = x_i + (σ_{i+1} − σ_i) · (x_i − D_i) / σ_i

With ``σ_25 = 0`` the last step returns ``D_24``.  Noising to step ``t`` is the
authors' "add_noise" inversion ``x = z0 + σ_t · ε`` (docs/design/authors_code.md#schedule-and-noise-levels).

Batched runs: ``x`` is ``[R, T, 4, h, w]`` — ``R`` independent runs (e.g. the
reference pass and the modulated passes) sharing the conditioning of one
``T``-frame batch.  Each UNet evaluation stacks rows as ``[run, half, frame]``
(:class:`~.attention.RowLayout`).
"""
from __future__ import annotations

import contextlib
import functools
import logging
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Dict, Iterator, Optional

import torch
import torch.nn.functional as F

from ..errors import InputError
from .attention import AttentionController, HookedAttnProcessor, LayerId, RowLayout
from .config import BackboneConfig

_DIFFUSERS_CAST_LOG = "diffusers.models.modeling_utils"


def _not_the_empty_fp32_warning(record: logging.LogRecord) -> bool:
    return "should be kept in float32: []" not in record.getMessage()


@contextlib.contextmanager
def without_empty_fp32_warning() -> Iterator[None]:
    """Inside the block, diffusers' dtype-cast warning is dropped when it names no module.

    diffusers (0.42) warns on every dtype cast (``to``, and ``from_single_file`` / ``from_pretrained`` with
    ``torch_dtype``) that modules "should be kept in float32", even when the model lists none
    (``_keep_in_fp32_modules`` empty): two meaningless warnings per load.  Only that empty form is dropped; a
    model that does list modules still warns."""
    log = logging.getLogger(_DIFFUSERS_CAST_LOG)
    mine = functools.partial(_not_the_empty_fp32_warning)  # one filter per block: nested blocks (a cast inside
    log.addFilter(mine)                                     # a load) each remove only their own
    try:
        yield
    finally:
        log.removeFilter(mine)


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module.to(dtype=dtype)`` without diffusers' warning that names no module."""
    with without_empty_fp32_warning():
        return module.to(dtype=dtype)


#: callback(step_index, x_after_step [R,T,4,h,w]) -> x (may blend latents)
StepCallback = Callable[[int, torch.Tensor], torch.Tensor]


class Backbone(ABC):
    """Common interface of every diffusion backbone."""

    #: "sd" or "svd"
    family: ClassVar[str]
    #: False for backbones whose hooks run in someone else's patch points (the ComfyUI adapter): the
    #: modulation's processor swaps (``sharing_attention``) are then skipped
    swappable_processors: ClassVar[bool] = True

    def __init__(self, name: str, config: BackboneConfig, unet, vae, device: torch.device, dtype: torch.dtype):
        self.name = name
        self.config = config
        self.unet = unet
        self.vae = vae
        self.device = device
        self.dtype = dtype
        self.controller = AttentionController()
        self._processors_installed = False
        #: latent scale of the VAE (0.18215 for SD 2.1 and SVD)
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        #: pixels per latent cell (8)
        self._vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------ frames
    def work_size(self, height: int, width: int) -> tuple:
        """Frame size rounded down to multiples of 64, no crop (docs/design/authors_code.md#effective-settings)."""
        m = self.config.size_multiple
        h, w = (height // m) * m, (width // m) * m
        if h < m or w < m:
            raise InputError(f"Frames of {width}x{height} are too small: both sides must be at least {m} px.",
                             f"Upscale the video to at least {m}x{m}.")
        return h, w

    def prepare_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``[T,H,W,3]`` (or ``[T,3,H,W]``) in 0..1 -> ``[T,3,h64,w64]`` in -1..1 on the device.

        Resized with bicubic + antialias, the torch counterpart of the authors'
        PIL BICUBIC resize.
        """
        if frames.ndim != 4 or 3 not in (frames.shape[-1], frames.shape[1]):
            raise InputError(f"Frames must be [T,H,W,3] (or [T,3,H,W]); got shape {tuple(frames.shape)}.",
                             "Pass an RGB image batch.")
        x = frames if frames.shape[1] == 3 and frames.shape[-1] != 3 else frames.permute(0, 3, 1, 2)
        if self.device.type == "cuda" and x.device.type == "cpu":  # pinned + non-blocking: no host sync
            x = x.to(torch.float32).contiguous().pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device, torch.float32)
        h, w = self.work_size(x.shape[-2], x.shape[-1])
        if (h, w) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        return (x * 2 - 1).to(self.dtype)

    # ------------------------------------------------------------ VAE (shared by every backbone)
    def _vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def _keep_vae_fp32(self) -> None:
        """The SD 2.1 and SVD VAEs overflow in fp16 (their configs say ``force_upcast``): kept in fp32 then."""
        if self.dtype == torch.float16:
            cast_module(self.vae, torch.float32)

    def _chunks(self, n: int):
        """``(start, stop)`` ranges of ``config.decode_chunk`` frames (``None``: all at once)."""
        step = n if self.config.decode_chunk is None else int(self.config.decode_chunk)
        if step < 1:
            raise InputError(f"decode_chunk must be at least 1; got {step}.", "Use None (all at once) or a positive int.")
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    def _encode_chunks(self, n: int, height: int, width: int):
        """``(start, stop)`` ranges for encoding ``n`` frames of ``height x width``: ``decode_chunk`` frames a
        call, fewer where that would exceed ``config.encode_pixels`` pixels (at least one frame a call)."""
        step = self._chunks(n)[0][1]  # decode_chunk frames (all n when None), validated there
        budget = getattr(self.config, "encode_pixels", None)
        if budget is not None:
            if int(budget) < 1:
                raise InputError(f"encode_pixels must be at least 1; got {budget}.",
                                 "Use None (decode_chunk frames a call) or a positive pixel count.")
            step = max(1, min(step, int(budget) // (height * width)))
        return [(i, min(i + step, n)) for i in range(0, n, step)]

    def _check_frames(self, frames, what: str) -> tuple:
        """``(T, H, W)`` of prepared frames ``[T,3,H,W]``, or a readable error."""
        f = self._vae_factor
        if not torch.is_tensor(frames) or frames.ndim != 4 or frames.shape[1] != 3:
            raise InputError(f"{what} expects frames [T,3,H,W] in -1..1; got {getattr(frames, 'shape', type(frames))}.",
                             "Use prepare_frames() first.")
        t, _, h, w = frames.shape
        if t == 0 or h == 0 or w == 0 or h % f or w % f:
            raise InputError(f"Frames of {w}x{h} (T={t}) cannot be used: sides must be non-zero multiples of {f}.",
                             "Use prepare_frames(), which resizes to multiples of 64.")
        return t, h, w

    def encode(self, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[T,3,H,W]`` in -1..1 -> ``scaling · (mean + std·ε)`` ``[T,4,H/8,W/8]`` (posterior *sample*).

        ``ε`` is drawn on the CPU from ``generator`` for the whole batch at once,
        so chunking (``config.decode_chunk`` frames a call, fewer for large frames:
        ``config.encode_pixels``) changes the result by float rounding at most.
        """
        t, h, w = self._check_frames(frames, "encode")
        f = self._vae_factor
        vdt = self._vae_dtype()
        noise = self.randn((t, self.vae.config.latent_channels, h // f, w // f), generator).to(vdt)
        out = []
        with torch.no_grad():
            for a, b in self._encode_chunks(t, h, w):
                dist = self.vae.encode(frames[a:b].to(self.device, vdt)).latent_dist
                out.append(dist.mean + dist.std * noise[a:b])
        return (torch.cat(out) * self.scaling_factor).to(self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[N,4,h,w]`` -> frames ``[N,3,8h,8w]`` float32 in 0..1, ``config.decode_chunk`` a call."""
        channels = self.latent_channels
        if not torch.is_tensor(latents) or latents.ndim != 4 or latents.shape[1] != channels:
            raise InputError(f"decode expects latents [N,{channels},h,w]; got {getattr(latents, 'shape', type(latents))}.",
                             "Flatten run / frame dimensions first.")
        return torch.cat([self._decode_call(latents[a:b], b - a) for a, b in self._chunks(latents.shape[0])])

    @property
    def latent_channels(self) -> int:
        """Channels of a latent (4 for SD 2.1 and SVD)."""
        return int(self.vae.config.latent_channels)

    def decode_clips(self, latents: torch.Tensor, max_frames: Optional[int] = None) -> torch.Tensor:
        """Several clips ``[B,T,4,h,w]`` -> ``[B,T,3,8h,8w]``, each clip decoded as :meth:`decode` would, with the
        same chunk of every clip in ONE VAE call (up to ``max_frames`` frames a call; None: ``decode_chunk``).

        Backbones whose VAE treats frames independently (SD) regroup frames freely;
        a temporal VAE (SVD) keeps its ``decode_chunk``-frame clips and batches whole clips.
        """
        channels = self.latent_channels
        if not torch.is_tensor(latents) or latents.ndim != 5 or latents.shape[2] != channels:
            raise InputError(f"decode_clips expects latents [B,T,{channels},h,w]; got "
                             f"{getattr(latents, 'shape', type(latents))}.", "Stack the clips first.")
        B, T = latents.shape[:2]
        limit = max_frames if max_frames is not None else (self.config.decode_chunk or T)
        limit = max(1, int(limit))
        if self.vae_frames_independent:
            flat = latents.flatten(0, 1)
            out = [self._decode_call(flat[a:a + limit], min(limit, flat.shape[0] - a))
                   for a in range(0, flat.shape[0], limit)]
            return torch.cat(out).view(B, T, *out[0].shape[1:])
        parts = []
        for a, b in self._chunks(T):
            clips = max(1, limit // (b - a))
            group = [self._decode_call(latents[i:i + clips, a:b].flatten(0, 1), b - a).unflatten(0, (-1, b - a))
                     for i in range(0, B, clips)]
            parts.append(torch.cat(group))
        return torch.cat(parts, dim=1)

    #: the VAE decodes every frame on its own (False: a temporal VAE, clips of ``decode_chunk`` frames)
    vae_frames_independent: ClassVar[bool] = True

    def _decode_call(self, latents: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """One VAE call on scaled latents ``[n,4,h,w]`` (clips of ``clip_frames``) -> float32 in 0..1."""
        with torch.no_grad():
            x = self._vae_decode(latents.to(self.device, self._vae_dtype()) / self.scaling_factor, clip_frames)
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def _vae_decode(self, z: torch.Tensor, clip_frames: int) -> torch.Tensor:
        """One VAE decoder call on unscaled latents ``[n,4,h,w]`` -> ``[n,3,8h,8w]`` in -1..1."""
        return self.vae.decode(z).sample

    # ------------------------------------------------------------ model parts
    @abstractmethod
    def condition(self, frames: torch.Tensor, generator: torch.Generator) -> Any:
        """Conditioning of one ``T``-frame batch (both guidance halves), from prepared frames."""

    @abstractmethod
    def sigmas(self) -> torch.Tensor:
        """The schedule: ``num_steps + 1`` noise levels (float64, last = 0)."""

    @abstractmethod
    def denoised(self, x: torch.Tensor, step: int, cond: Any, conditional_only: bool = False) -> torch.Tensor:
        """One guided UNet evaluation at ``step``: ``x [R,T,4,h,w]`` -> D ``[R,T,4,h,w]``.

        ``conditional_only`` evaluates the conditional half alone (rows
        ``[run, frame]``, layout ``halves = 1``) and returns its unguided D: for
        reading the conditional queries of an evaluation whose output is not
        needed (the feature step).  Implementations must set
        ``self.controller.layout`` / ``latent_grid`` (see
        :meth:`_prepare_controller`) before calling the UNet.
        """

    @abstractmethod
    def attention_layers(self) -> Dict[LayerId, torch.nn.Module]:
        """The decoder attention modules (LDM output blocks 3..11) by layer id."""

    def sigma_values(self) -> list:
        """:meth:`sigmas` as Python floats, converted once (the sampler loop reads no tensor on the host)."""
        sig = self.sigmas()
        cached = getattr(self, "_sigma_values", None)
        if cached is None or cached[0] is not sig:
            cached = (sig, [float(v) for v in sig.tolist()])
            self._sigma_values = cached
        return cached[1]

    def _check_denoise_args(self, step: int, cond: Any, cond_type: type) -> torch.Tensor:
        """The schedule, after checking ``step`` lies in it and ``cond`` came from :meth:`condition`."""
        sig = self.sigmas()
        if not 0 <= int(step) < len(sig) - 1:
            raise InputError(f"Step {step} is outside the {len(sig) - 1}-step schedule.",
                             f"Use a step index in 0..{len(sig) - 2}.")
        if not isinstance(cond, cond_type):
            raise InputError(f"cond must come from {type(self).__name__}.condition(); got {type(cond).__name__}.",
                             "Call backbone.condition(frames, generator).")
        return sig

    # ------------------------------------------------------------ sampler
    def add_noise(self, z0: torch.Tensor, step: int, noise: torch.Tensor) -> torch.Tensor:
        """The authors' "add_noise" inversion: ``x = z0 + σ_step · ε``."""
        sigma = self.sigma_values()[step]
        return z0 + sigma * noise.to(z0.dtype)

    def denoise(self, x: torch.Tensor, cond: Any, start_step: int, end_step: Optional[int] = None,
                callback: Optional[StepCallback] = None) -> torch.Tensor:
        """Deterministic Euler from ``start_step`` through ``end_step`` (default: the last step)."""
        sigmas = self.sigma_values()
        last = len(sigmas) - 2 if end_step is None else end_step
        if x.ndim != 5:
            raise InputError(f"Latents must be [R,T,4,h,w]; got {tuple(x.shape)}.", "Add the run dimension.")
        for i in range(start_step, last + 1):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            d_hat = self.denoised(x, i, cond)
            x = x + (sigma_next - sigma) * (x - d_hat) / sigma
            if callback is not None:
                x = callback(i, x)
        return x

    def _prepare_controller(self, step: int, runs: int, frames: int, latent_hw: tuple, halves: int = 2) -> None:
        self.controller.step = step
        self.controller.layout = RowLayout(runs, frames, halves)
        self.controller.latent_grid = tuple(int(v) for v in latent_hw)
        self.controller.runs_share_context = True  # denoised() tiles the batch's one conditioning over the runs

    def prefix_splitter(self, split_block: int):
        """The UNet split before decoder block ``split_block``'s attention, for prefix sharing at t_m (contract:
        :class:`~vidseg_core.backbones.split.UNetSplitter`; raises TypeError / ValueError with the reason
        when this UNet cannot be split).  Here: diffusers' UNets; ComfyUI's native adapter overrides it."""
        from .diffusers_split import DiffusersSplitter

        return DiffusersSplitter(self.unet, split_block)

    # ------------------------------------------------------------ torch.compile (vidseg_core/compile.py)
    #: True when the compiled blocks may only be active during this backbone's own UNet / VAE calls (its
    #: modules are shared with someone else, e.g. ComfyUI's MODEL): :func:`~vidseg_core.compile.compiled_scope`
    compile_scoped: ClassVar[bool] = False

    def compile_regions(self) -> Dict[str, torch.nn.Module]:
        """The modules compiled in place, by qualified name: each ResNet block, transformer block, down- and
        upsampler of diffusers' UNet, and the VAE's encoder and decoder."""
        out: Dict[str, torch.nn.Module] = {}
        unet = self.unet
        groups = [("down_blocks", b) for b in unet.down_blocks] + [("mid_block", unet.mid_block)] + \
                 [("up_blocks", b) for b in unet.up_blocks]
        for i, (kind, blk) in enumerate(groups):
            for part in ("resnets", "attentions", "downsamplers", "upsamplers"):
                for j, m in enumerate(getattr(blk, part, None) or []):
                    out[f"unet.{kind}[{i}].{part}[{j}]"] = m
        for part in ("encoder", "decoder"):
            m = getattr(self.vae, part, None)
            if m is not None:
                out[f"vae.{part}"] = m
        return out

    def compile_exclusions(self) -> Dict[str, Any]:
        """What runs the hooks inside the compiled regions, kept out of the graphs: objects whose ``forward``
        is wrapped in ``torch.compiler.disable`` (here the hookable attention modules)."""
        return {str(layer): module for layer, module in self.attention_layers().items()}

    # ------------------------------------------------------------ hooks
    def install_processors(self) -> None:
        """Give every decoder attention layer a hookable processor (idempotent)."""
        if self._processors_installed:
            return
        for layer, module in self.attention_layers().items():
            module.set_processor(HookedAttnProcessor(layer, self.controller))
        self._processors_installed = True

    @contextlib.contextmanager
    def hooks(self, *hooks) -> Iterator[AttentionController]:
        """Activate attention hooks for the duration of a ``with`` block."""
        self.install_processors()
        previous = list(self.controller.hooks)
        self.controller.hooks = previous + list(hooks)
        try:
            yield self.controller
        finally:
            self.controller.hooks = previous

    # ------------------------------------------------------------ housekeeping
    def to(self, device=None, dtype=None) -> "Backbone":
        """Move / cast every module (ComfyUI offloading), only where needed; the VAE stays fp32 when ``dtype``
        is fp16 (:meth:`_keep_vae_fp32`).  Returns self."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        for m in self.modules().values():
            p = next(m.parameters(), None)
            if p is None or p.device != device:
                m.to(device=device)
            if p is not None and p.dtype != dtype:
                cast_module(m, dtype)
        self.device, self.dtype = device, dtype
        self._keep_vae_fp32()
        return self

    def modules(self) -> Dict[str, torch.nn.Module]:
        """All torch modules of the backbone by role."""
        return {"unet": self.unet, "vae": self.vae}

    def generator(self, seed: Optional[int] = None) -> torch.Generator:
        """A CPU generator seeded like the authors' per-batch ``seed_everything``."""
        g = torch.Generator("cpu")
        g.manual_seed(self.config.seed if seed is None else seed)
        return g

    def randn(self, shape, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise drawn on the CPU (device-independent), moved to the device."""
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, dtype={self.dtype})"
