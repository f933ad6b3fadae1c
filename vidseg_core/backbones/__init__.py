"""Diffusion backbones: one interface (:class:`Backbone`), SD 2.1 and SVD implementations."""
from .attention import AttentionController, AttentionHook, CaptureQueries, LayerId, RowLayout
from .base import Backbone
from .config import BackboneConfig, SD21Config, SVDConfig
from .loading import TINY_MODELS, load_backbone

__all__ = ["AttentionController", "AttentionHook", "Backbone", "BackboneConfig", "CaptureQueries", "LayerId",
           "RowLayout", "SD21Config", "SVDConfig", "TINY_MODELS", "load_backbone"]
