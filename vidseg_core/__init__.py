"""VidSeg core: training-free video semantic segmentation from diffusion features.

A plain library (torch, diffusers, numpy, scikit-learn, OpenCV) that implements
VidSeg, "Zero-Shot Video Semantic Segmentation based on Pre-Trained Diffusion
Models".  It never imports ComfyUI; the node pack in ``nodes/``
and the command line (``python -m vidseg_core``) are thin layers over it.

Heavy dependencies (diffusers, transformers, scikit-learn, cv2) are imported
lazily inside the functions that need them, so ``import vidseg_core`` is fast
and a broken optional dependency cannot take ComfyUI down.
"""
from .errors import VidSegError

__version__ = "0.1.0"
__all__ = ["VidSegError", "__version__"]
