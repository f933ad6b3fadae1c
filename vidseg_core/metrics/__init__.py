"""Evaluation metrics (docs/design/metrics.md): VSPW mIoU and mVC_n, DAVIS J&F.

* :mod:`.confusion`   - global confusion matrix, mIoU / pixel acc / mean class acc / FWIoU;
* :mod:`.consistency` - VSPW video consistency VC_n;
* :mod:`.jf`          - DAVIS per-frame region similarity J and boundary measure F;
* :mod:`.davis`       - DAVIS statistics and the semi-supervised / unsupervised protocols;
* :mod:`.io`          - reading folders of PNG label maps;
* :mod:`.evaluate`    - :func:`evaluate_arrays` / :func:`evaluate_dirs`, used by the CLI and the node.
"""
from .confusion import ConfusionMatrix, MIoUResult, mean_iou
from .consistency import VCResult, VideoConsistency, video_consistency
from .davis import (
    BOUND_TH,
    MAX_PROPOSALS,
    PROTOCOLS,
    DavisEvaluator,
    DavisResult,
    ObjectScore,
    davis_statistics,
    decay_bins,
    evaluate_semi_supervised,
    evaluate_unsupervised,
    score_sequence,
)
from .evaluate import METRICS, evaluate_arrays, evaluate_dirs, parse_metrics
from .io import list_frames, pair_frames, read_label_png, read_label_sequence, read_pair
from .jf import boundary_map, boundary_measure, boundary_tolerance, region_similarity
from .labels import vspw_remap

__all__ = [
    "BOUND_TH", "MAX_PROPOSALS", "METRICS", "PROTOCOLS",
    "ConfusionMatrix", "MIoUResult", "mean_iou", "vspw_remap",
    "VCResult", "VideoConsistency", "video_consistency",
    "DavisEvaluator", "DavisResult", "ObjectScore", "boundary_map", "boundary_measure", "boundary_tolerance",
    "davis_statistics", "decay_bins", "evaluate_semi_supervised", "evaluate_unsupervised",
    "region_similarity", "score_sequence",
    "evaluate_arrays", "evaluate_dirs", "parse_metrics",
    "list_frames", "pair_frames", "read_label_png", "read_label_sequence", "read_pair",
]
