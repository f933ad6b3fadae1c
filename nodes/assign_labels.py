"""Assign Labels (``VidSegAssignLabels``): name the KMeans clusters of the reference frame (docs/design/authors_code.md#label-assignment-and-the-scene-context-model, #evaluation-facing-facts)."""
from __future__ import annotations

import dataclasses
import logging

from ..vidseg_core.errors import InputError
from ..vidseg_core.labels import LabelTable, assign_labels, note_grid_losses, prepare_reference
from .convert import parse_names, reference_from_label_image, reference_from_mask
from .schema import Int, Node, Out, Socket, String
from .sockets import VIDSEG_CLUSTERS, Clusters

log = logging.getLogger("vidseg")

MASK_NAMES = {0: "background", 1: "object"}


class VidSegAssignLabels:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegAssignLabels", "Assign Labels (VidSeg)", "VidSeg/stages",
            "Names the KMeans clusters of the reference frame: each cluster takes the majority value of the reference "
            "under it (a MASK drawn on the frame: 1 = object, 0 = background; or a label IMAGE with palette colours / "
            "grey ids). Without a reference the cluster ids become the labels. Reference labels that win no cluster "
            "are lost for the whole video (reported in the info output).",
            inputs=(
                Socket("clusters", VIDSEG_CLUSTERS, "Clusters from KMeans Init."),
                Int("frame_index", -1, -1, 100000, "Video frame the reference belongs to; -1 = KMeans Init's "
                                                   "reference_frame. It must lie in the clustered batch."),
                String("label_names", "", "Optional names, e.g. '1: swan, 0: water'. A MASK reference is named 0: "
                                          "background, 1: object by default.", multiline=False),
                Int("void_value", 255, -1, 255, "Reference value that never names a cluster (DAVIS / VSPW: 255); "
                                                "-1 = none.", advanced=True),
                Socket("reference_mask", "MASK", "Mask of the object on the reference frame (e.g. painted in Load "
                                                 "Image's mask editor); >= 0.5 is the object. One frame, or one per "
                                                 "video frame (frame_index is used).", optional=True),
                Socket("reference_labels", "IMAGE", "Or: a label map as an image (DAVIS / VOC palette colours, or "
                                                    "grey levels = ids; black/white = 0/1).", optional=True),
            ),
            outputs=(
                Out("clusters", VIDSEG_CLUSTERS, "The clusters with their label names and colours (the label table)."),
                Out("info", "STRING", "What was assigned: labels, clusters without a label, reference labels that "
                                      "were lost."),
            ),
            function="assign", search_aliases=("name clusters", "reference mask", "label clusters"))

    def assign(self, clusters, frame_index=-1, label_names="", void_value=255, reference_mask=None,
               reference_labels=None):
        if not isinstance(clusters, Clusters):
            raise InputError(f"Expected VidSeg clusters, got {type(clusters).__name__}.",
                             "Connect the output of KMeans Init.")
        if reference_mask is not None and reference_labels is not None:
            raise InputError("Both a reference mask and a reference label image are connected.",
                             "Connect only one of them.")
        frame = clusters.reference_frame if frame_index < 0 else int(frame_index)
        cl = clusters.frame_clusters(frame)
        void = () if void_value < 0 else (int(void_value),)
        names = {}
        ref = None
        if reference_mask is not None:
            ref = reference_from_mask(reference_mask, frame)
            names = dict(MASK_NAMES)
        elif reference_labels is not None:
            ref = reference_from_label_image(reference_labels, frame)
        full = ref
        if ref is not None:
            ref = prepare_reference(ref, clusters.grid, clusters.frame_size, void)
        names.update(parse_names(label_names))
        assignment = note_grid_losses(assign_labels(cl, clusters.num_clusters, ref, void), full, ref, void)
        table = LabelTable.from_values(assignment.mapping.values(), names, assignment.kind)
        if assignment.lost_at_grid:
            log.warning("[VidSeg] reference labels %s are smaller than one feature-grid cell and vanish at the grid; "
                        "they are lost for the whole video: enlarge them in the mask.", assignment.lost_at_grid)
        if assignment.lost_labels != assignment.lost_at_grid:
            log.warning("[VidSeg] reference labels %s won no KMeans cluster and are lost for the whole video; "
                        "raise num_clusters.", [v for v in assignment.lost_labels if v not in assignment.lost_at_grid])
        named = dataclasses.replace(clusters, reference_frame=frame, assignment=assignment, table=table,
                                    meta={**clusters.meta, "reference": ref is not None})
        return (named, self.describe(named))

    @staticmethod
    def describe(c: Clusters) -> str:
        a, t = c.assignment, c.table
        src = "the reference" if a.kind == "label" else "no reference (cluster ids are the labels)"
        lines = [f"Frame {c.reference_frame}: {len(a.mapping)} of {c.num_clusters} clusters named from {src}; "
                 f"{len(t)} labels: " + ", ".join(f"{e.value} ({e.name})" for e in t)]
        if a.unassigned_clusters:
            lines.append(f"Clusters without a label (not used): {a.unassigned_clusters}")
        if a.lost_at_grid:
            lines.append(f"Reference labels lost (smaller than one grid cell; enlarge them): {a.lost_at_grid}")
        if a.lost_labels != a.lost_at_grid:
            lines.append(f"Reference labels lost (no cluster won them; raise K): "
                         f"{[v for v in a.lost_labels if v not in a.lost_at_grid]}")
        return "\n".join(lines)


NODES = (VidSegAssignLabels,)
