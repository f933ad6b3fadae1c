"""The ComfyUI adapter's shared part: :class:`ComfyBackbone` (UNet through a MODEL clone, VAE, patches).

ComfyUI's attention patch points carry the core's hooks (:class:`AttentionReplace`, :class:`AttentionOutput`);
the family-specific backbones are in :mod:`.native_sd` and :mod:`.native_svd`; the design is
described in :mod:`.native`.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ...vidseg_core.backbones.attention import AttentionController, LayerId
from ...vidseg_core.backbones.base import Backbone
from ...vidseg_core.compile import compiled_scope
from ...vidseg_core.errors import InputError
from .bridge import _mm, optimized_attention as _optimized_attention

DECODER_BLOCKS = tuple(range(3, 12))
SUPPORTED = "Stable Diffusion 2.x (SD 2.0 / 2.1, 512-base or 768-v) and Stable Video Diffusion img2vid (SVD / SVD-XT)"


# ------------------------------------------------------------------ family detection
def model_family(model) -> str:
    """``"sd"`` or ``"svd"`` from a ComfyUI MODEL (a ``ModelPatcher``), else a readable :class:`InputError`."""
    inner = getattr(model, "model", None)
    config = getattr(inner, "model_config", None)
    unet = dict(getattr(config, "unet_config", None) or {})
    what = type(config).__name__ if config is not None else type(model).__name__
    if inner is None or config is None or not hasattr(inner, "apply_model"):
        raise InputError(f"The 'model' input is a {type(model).__name__}, not a ComfyUI MODEL.",
                         "Connect the MODEL output of Load Checkpoint (SD 2.1) or Image Only Checkpoint Loader (SVD).")
    temporal = bool(unet.get("use_temporal_attention"))
    if temporal and type(inner).__name__ == "SVD_img2vid" and unet.get("in_channels") == 8:
        return "svd"
    if (not temporal and unet.get("context_dim") == 1024 and unet.get("model_channels") == 320
            and unet.get("in_channels", 4) == 4 and not unet.get("adm_in_channels")):
        return "sd"
    raise InputError(f"The connected MODEL is {what} ({type(inner).__name__}); VidSeg supports {SUPPORTED}.",
                     "Load v2-1_512-ema-pruned / v2-1_768-ema-pruned with Load Checkpoint, or svd / svd_xt with "
                     "Image Only Checkpoint Loader (img2vid model), and connect that MODEL.")


# ------------------------------------------------------------------ patches
class _Patch:
    """Base of the patch objects: shared, never copied (ComfyUI deep-copies ``model_options`` on clone)."""

    def __init__(self, backbone: "ComfyBackbone"):
        self.backbone = backbone

    def __deepcopy__(self, memo):
        return self

    def to(self, device):  # multi-GPU clones cast patches per device; ours hold no tensors
        return self

    def __call__(self, *args):
        # through ``forward``, which torch.compile keeps out of its graphs (``compile_exclusions``): the hooks
        # read the step and the controller's state, traced they would recompile at every step
        return self.forward(*args)


class AttentionReplace(_Patch):
    """``attn1`` / ``attn2`` replace patch of one decoder block: q/k hooks, then the previous patch or attention."""

    def __init__(self, backbone, attn: str, block: int, previous=None):
        super().__init__(backbone)
        self.attn, self.block, self.previous = attn, block, previous

    def forward(self, q, k, v, extra_options):
        layer = self.backbone.layer_of(self.attn, self.block, q, extra_options, output=False)
        ctrl = self.backbone.controller
        if ctrl.hooks and layer is not None:
            hctx = ctrl.context(layer)
            for hook in ctrl.hooks:
                if hook.wants(layer, hctx):
                    q, k = hook.on_qk(layer, q, k, hctx)
        if self.previous is not None:
            return self.previous(q, k, v, extra_options)
        return _optimized_attention()(q, k, v, extra_options["n_heads"],
                                      attn_precision=extra_options.get("attn_precision"))


class AttentionOutput(_Patch):
    """``attn1_output_patch`` / ``attn2_output_patch``: the hooks' ``on_output`` (after ``to_out``, before the residual)."""

    def __init__(self, backbone, attn: str):
        super().__init__(backbone)
        self.attn = attn

    def forward(self, n, extra_options):
        block = extra_options.get("block")
        if not block or block[0] != "output" or block[1] not in DECODER_BLOCKS or extra_options.get("block_index", 0):
            return n
        _mm().throw_exception_if_processing_interrupted()  # stop inside a long UNet pass (CPU / low VRAM)
        layer = self.backbone.layer_of(self.attn, int(block[1]), n, extra_options, output=True)
        ctrl = self.backbone.controller
        if ctrl.hooks and layer is not None:
            hctx = ctrl.context(layer)
            for hook in ctrl.hooks:
                if hook.wants(layer, hctx):
                    n = hook.on_output(layer, n, hctx)
        return n


# ------------------------------------------------------------------ the shared adapter
class ComfyBackbone(Backbone):
    """What both families share: the patched clone, loading, VAE, layer bookkeeping (see module doc)."""

    #: the core must not swap attention processors (``sharing_attention``): hooks run in ComfyUI's patches
    swappable_processors = False

    def __init__(self, name: str, config, model, vae):
        self.source_model = model
        self.patched = model.clone()
        self.vae_object = vae
        inner = self.patched.model
        self.name = name
        self.config = config
        self.unet = inner.diffusion_model
        self.vae = vae.first_stage_model
        self.device = torch.device(self.patched.load_device)
        self.dtype = torch.float32  # latents and sampler maths; ComfyUI casts to the weights' dtype inside
        self.controller = AttentionController()
        self._processors_installed = True
        self.scaling_factor = float(getattr(inner.latent_format, "scale_factor", 0.18215))
        self._vae_factor = int(getattr(vae, "downscale_ratio", 8))
        self._calls: Dict[tuple, int] = {}
        self._install_patches()
        #: ``cond_or_uncond`` is given only to foreign patches / wrappers (see :meth:`_evaluate`)
        self._foreign_readers = self._read_by_others(self.patched.model_options.get("transformer_options", {}))

    # ------------------------------------------------------------ patches
    def _install_patches(self) -> None:
        to = self.patched.model_options.setdefault("transformer_options", {})
        replaced = to.get("patches_replace", {})
        self._patches: Dict[str, _Patch] = {}
        for attn in ("attn1", "attn2"):
            existing = replaced.get(attn, {})
            for b in DECODER_BLOCKS:
                previous = existing.get(("output", b, 0)) or existing.get(("output", b))
                patch = self._patches[f"{attn} replace patch, output block {b}"] = AttentionReplace(self, attn, b,
                                                                                                      previous)
                self.patched.set_model_patch_replace(patch, attn, "output", b, 0)
            patch = self._patches[f"{attn}_output_patch"] = AttentionOutput(self, attn)
            self.patched.set_model_patch(patch, f"{attn}_output_patch")

    def layer_of(self, attn: str, block: int, t: torch.Tensor, extra_options, output: bool) -> Optional[LayerId]:
        """The layer id of a patch call.  SVD's spatial and temporal blocks share a key ("output", b, 0):
        ComfyUI always runs the spatial block first, so calls alternate (checked against the shapes)."""
        kind = "self" if attn == "attn1" else "cross"
        if self.family != "svd":
            return LayerId(block, f"spatial_{kind}")
        key = (attn, block, output)
        n = self._calls.get(key, 0)
        self._calls[key] = n + 1
        temporal = bool(n % 2)
        lay = self.controller.layout
        if lay is not None:
            frames = lay.frames
            spatial_shape = t.shape[0] == lay.rows
            temporal_shape = t.shape[1] == frames and t.shape[0] % (lay.runs * lay.halves) == 0
            if spatial_shape != temporal_shape and temporal != temporal_shape:
                raise RuntimeError(f"VidSeg lost track of SVD's spatial / temporal attention calls at block {block} "
                                   f"(shape {tuple(t.shape)}): another patch changes the call order.")
        return LayerId(block, f"{'temporal' if temporal else 'spatial'}_{kind}")

    def prefix_splitter(self, split_block: int):
        """Prefix sharing on ComfyUI's own SD / SVD UNet (:mod:`.native_split`)."""
        from .native_split import ComfyUNetSplitter

        return ComfyUNetSplitter(self.unet, split_block, self.owns_patch)

    def _read_by_others(self, to: dict) -> bool:
        """Does anything but the adapter's own patches see ``transformer_options`` (foreign patches, also when
        composed, or wrappers)?"""
        from .native_split import foreign_patches

        if any(fns for table in (to.get("wrappers") or {}).values() for fns in (table or {}).values()):
            return True
        return bool(foreign_patches(to, self.owns_patch))

    def owns_patch(self, patch) -> bool:
        """Is ``patch`` one of this adapter's own, composing no foreign patch?"""
        return isinstance(patch, _Patch) and patch.backbone is self and getattr(patch, "previous", None) is None

    def attention_layers(self) -> Dict[LayerId, str]:
        """Decoder attention layers (blocks 3..11) -> their LDM module path (hooked through patches, not modules)."""
        kinds = ("spatial_self", "spatial_cross") + (("temporal_self", "temporal_cross") if self.family == "svd" else ())
        out = {}
        for b in DECODER_BLOCKS:
            for kind in kinds:
                stack = "time_stack" if kind.startswith("temporal") else "transformer_blocks"
                out[LayerId(b, kind)] = f"output_blocks.{b}.1.{stack}.0.{'attn1' if kind.endswith('self') else 'attn2'}"
        return out

    def install_processors(self) -> None:
        """Nothing to install: the patches were set on the clone at construction."""

    # ------------------------------------------------------------ torch.compile (vidseg_core/compile.py)
    #: ComfyUI's modules belong to the MODEL, which ComfyUI's samplers run too: the compiled blocks are
    #: active only during VidSeg's own calls (``compiled_scope``), the MODEL's modules are left as they were
    compile_scoped = True

    def compile_regions(self) -> Dict[str, torch.nn.Module]:
        """Every layer of ComfyUI's UNet blocks (``ResBlock`` / ``SpatialTransformer`` and their video
        subclasses, ``Downsample`` / ``Upsample``; not the lone input convolution) and the first stage's encoder
        and decoder."""
        if not all(hasattr(self.unet, part) for part in ("input_blocks", "middle_block", "output_blocks")):
            raise TypeError(f"{type(self.unet).__name__} is not ComfyUI's UNetModel layout (input_blocks, "
                            "middle_block, output_blocks): its blocks are not known")
        out: Dict[str, torch.nn.Module] = {}
        groups = [(f"input_blocks[{i}]", b) for i, b in enumerate(self.unet.input_blocks)] + \
                 [("middle_block", self.unet.middle_block)] + \
                 [(f"output_blocks[{i}]", b) for i, b in enumerate(self.unet.output_blocks)]
        for name, block in groups:
            for j, layer in enumerate(block):
                if not isinstance(layer, torch.nn.Conv2d):
                    out[f"unet.{name}[{j}]"] = layer
        for part in ("encoder", "decoder"):
            m = getattr(self.vae, part, None)
            if isinstance(m, torch.nn.Module):
                out[f"vae.{part}"] = m
        return out

    @property
    def run_exceptions(self) -> tuple:
        """Raised through compiled blocks by the run itself (a cancel), not by compilation."""
        exc = getattr(_mm(), "InterruptProcessingException", None)
        return (exc,) if isinstance(exc, type) else ()

    def compile_exclusions(self) -> Dict[str, object]:
        """The adapter's own patches (the hooks run in them), not the attention modules (ComfyUI's)."""
        return dict(self._patches)

    # ------------------------------------------------------------ ComfyUI model management
    def load_unet(self, shape=None) -> None:
        mm = _mm()
        need = 0
        if shape is not None and hasattr(self.patched.model, "memory_required"):
            try:
                need = int(self.patched.model.memory_required(list(shape)))
            except Exception:  # noqa: BLE001 - an estimate only
                need = 0
        mm.load_models_gpu([self.patched], memory_required=need)
        self.device = torch.device(self.patched.load_device)

    def _load_vae(self):
        _mm().load_models_gpu([self.vae_object.patcher])
        return torch.device(self.vae_object.device), self.vae_object.vae_dtype

    def to(self, device=None, dtype=None) -> "ComfyBackbone":
        """Placement is ComfyUI's (``load_models_gpu`` before each use, its own offloading after): nothing moves."""
        return self

    def modules(self) -> Dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae}

    def _evaluate(self, x_rows, sigma: float, halves: int, runs: int, frames: int, **conds) -> torch.Tensor:
        """One ``apply_model`` call on rows ``[run, half, frame]`` -> denoised float32."""
        _mm().throw_exception_if_processing_interrupted()
        self.load_unet(tuple(x_rows.shape))
        dev = self.device
        to = dict(self.patched.model_options.get("transformer_options", {}))
        if self._foreign_readers:
            # ComfyUI's per-chunk flags, for the patches of others; ComfyUI's UNet and VidSeg's patches do not
            # read them, and their length (2 x runs) would make torch.compile recompile at every new run count
            to["cond_or_uncond"] = ([1, 0] if halves == 2 else [0]) * runs
        sig = torch.full((x_rows.shape[0],), sigma, dtype=torch.float32, device=dev)
        to["sigmas"] = sig
        to["sample_sigmas"] = self.sigmas().to(dev, torch.float32)
        self._calls = {}
        with torch.no_grad(), compiled_scope(self):
            out = self.patched.model.apply_model(x_rows.to(dev, torch.float32), sig, transformer_options=to,
                                                 **{k: (v.to(dev) if torch.is_tensor(v) else v)
                                                    for k, v in conds.items()})
        return out.float()

    # ------------------------------------------------------------ VAE
    def _vae_dtype(self) -> torch.dtype:
        return self.vae_object.vae_dtype

    @property
    def latent_channels(self) -> int:
        return int(getattr(self.vae_object, "latent_channels", 4))

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        fsm = self.vae
        h = fsm.encoder(x)
        qc = getattr(fsm, "quant_conv", None)
        return qc(h) if qc is not None else h

    def _mean_std(self, x: torch.Tensor):
        mean, logvar = self._moments(x).float().chunk(2, dim=1)
        return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def encode(self, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Posterior *sample* × scale (the authors'), noise drawn on the CPU for the whole batch (see base)."""
        t, h, w = self._check_frames(frames, "encode")
        f = self._vae_factor
        noise = torch.randn((t, self.latent_channels, h // f, w // f), generator=generator, dtype=torch.float32)
        dev, vdt = self._load_vae()
        out = []
        with torch.no_grad(), compiled_scope(self):
            for a, b in self._encode_chunks(t, h, w):
                _mm().throw_exception_if_processing_interrupted()
                mean, std = self._mean_std(frames[a:b].to(dev, vdt))
                out.append(mean + std * noise[a:b].to(dev))
        return (torch.cat(out) * self.scaling_factor).to(self.device, self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._load_vae()
        return super().decode(latents)

    def decode_clips(self, latents: torch.Tensor, max_frames: Optional[int] = None) -> torch.Tensor:
        """As the base, but ComfyUI's temporal (SVD) decoder treats everything in one call as ONE clip (its
        frame count is the batch size), so a temporal VAE decodes one clip per call."""
        self._load_vae()
        return super().decode_clips(latents, max_frames if self.vae_frames_independent else 1)

    def _vae_decode(self, z: torch.Tensor, clip_frames: int) -> torch.Tensor:
        dev = torch.device(self.vae_object.device)
        with compiled_scope(self):
            return self.vae.decode(z.to(dev, self.vae_object.vae_dtype)).float().to(self.device)  # one clip a call

    def randn(self, shape, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)
