"""Device and precision choices, validated up front with readable errors.

``auto`` precision is fp32 on the CPU and bf16 (or fp16 where bf16 is not
supported) on a GPU.  fp16 on the CPU is refused: it is slow and inaccurate
there (docs/design/backbones.md#costs-of-the-real-models-on-a-cpu).
"""
from __future__ import annotations

import torch

from .errors import DeviceError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else MPS, else CPU; explicit names are checked."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {device!r}.", "Use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("Device 'cuda' was requested but no CUDA GPU is available to torch.",
                          "Use device 'cpu' or 'auto', or install a CUDA build of torch.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("Device 'mps' was requested but MPS is not available.", "Use 'cpu' or 'auto'.")
    return dev


def resolve_dtype(precision: str | torch.dtype = "auto", device: torch.device | str = "cpu") -> torch.dtype:
    """Pick or validate the compute dtype for ``device``."""
    device = resolve_device(device)
    if isinstance(precision, torch.dtype):
        precision = {v: k for k, v in _DTYPES.items()}.get(precision, str(precision))
    p = (precision or "auto").strip().lower()
    p = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}.get(p, p)
    if p not in PRECISIONS:
        raise DeviceError(f"Unknown precision {precision!r}.", f"Use one of {', '.join(PRECISIONS)}.")
    if p == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if device.type == "cpu" and p == "fp16":
        raise DeviceError("fp16 is not supported on the CPU (slow and inaccurate there).",
                          "Use precision 'fp32' (or 'bf16' on a CPU with bf16 support), or run on a GPU.")
    if device.type == "cuda" and p == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError("This CUDA device does not support bf16.", "Use precision 'fp16' or 'auto'.")
    return _DTYPES[p]
