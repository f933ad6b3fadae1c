"""Naming clusters: reference-mask vote, stable cluster numbering, and the label table (docs/design/authors_code.md#label-assignment-and-the-scene-context-model, #evaluation-facing-facts).

Paper protocol: KMeans clusters of the reference frame (first frame by default)
are named by the first-frame ground truth.  Here:

* the reference mask is resized to the feature grid with NEAREST (pixel-centre
  sampling, ``src = floor((i + 0.5) * in / out)``, bit-identical to PIL's NEAREST); a mask
  whose size differs from the frames is resized too, with a warning; a mask
  already at the grid size is used as is;
* every cluster present in the reference frame takes the majority reference
  value among its cells; **ties go to the smallest value** (``np.unique`` +
  ``argmax``, as the authors);
* void/ignore values (default ``{255}``) never vote unless ``assign_void=True``;
  a cluster that wins no label (all its cells void, or absent from the
  reference frame) is reported in ``unassigned_clusters`` and its tokens are not
  used to train the context model, so a label absent from the reference can
  never appear; reference labels that win no cluster are reported in
  ``lost_labels`` (they are lost for the whole video, as in the authors' code);
* a reference with no non-void value is an :class:`InputError`;
* without a reference the cluster ids are the labels, renumbered 0, 1, ... in
  order of first appearance in raster order of the reference frame.

:class:`LabelTable` carries, for every label value that can appear, its name
and a colour from the fixed PASCAL VOC / DAVIS palette (indexed by value, so a
DAVIS mask's object 1 is drawn in the same dark red as in DAVIS), so later
stages and the ComfyUI nodes colour and select regions consistently over the
whole video.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import InputError

DEFAULT_VOID = (255,)


# ---------------------------------------------------------------- palette
def palette_color(value: int) -> Tuple[int, int, int]:
    """PASCAL VOC / DAVIS palette colour of ``value`` (bit-interleaving; any non-negative int)."""
    v = int(value)
    if v < 0:
        raise InputError(f"Label values must be non-negative for the palette, got {v}.", "Use ids >= 0.")
    r = g = b = 0
    shift = 7
    while v and shift >= 0:
        r |= ((v >> 0) & 1) << shift
        g |= ((v >> 1) & 1) << shift
        b |= ((v >> 2) & 1) << shift
        v >>= 3
        shift -= 1
    return r, g, b


def label_ids_from_rgb(rgb, tolerance: float = 24.0) -> np.ndarray:
    """Label ids ``[H, W]`` int64 of a label map stored as colours ``[H, W, 3]`` (uint8, or float in 0..1).

    * Greyscale (R = G = B everywhere): the grey level is the id; a pure black-and-white image
      (only 0 and 255) is a binary mask, so white becomes 1 (not the void value 255).
    * Colour: each colour is mapped to the palette index (:func:`palette_color`, DAVIS / VOC) whose
      colour is nearest, as long as it is within ``tolerance`` (Euclidean, 0..255 scale: absorbs
      compression noise); other colours are an :class:`InputError`.
    """
    arr = rgb.detach().cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"A colour label image must be [H, W, 3]; got shape {arr.shape}.",
                         "Pass one RGB image (e.g. a palette PNG loaded with Load Image).")
    arr = arr[..., :3]
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError("The label image contains NaN or infinite values.", "Pass an RGB image in 0..1.")
        arr = np.clip(np.round(arr * 255.0), 0, 255)
    arr = arr.astype(np.int64)
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        grey = arr[..., 0]
        if set(np.unique(grey).tolist()) <= {0, 255}:
            return (grey == 255).astype(np.int64)
        return grey
    colours, inverse = np.unique(arr.reshape(-1, 3), axis=0, return_inverse=True)
    palette = np.array([palette_color(v) for v in range(256)], dtype=np.int64)
    d = ((colours[:, None, :] - palette[None, :, :]) ** 2).sum(-1)
    ids = d.argmin(1)
    far = np.sqrt(d[np.arange(len(colours)), ids]) > tolerance
    if far.any():
        bad = ", ".join(str(tuple(int(c) for c in col)) for col in colours[far][:5])
        raise InputError(f"The label image has colours that are not label colours of the DAVIS / VOC palette: {bad}.",
                         "Give the labels as a palette PNG (DAVIS / VOC colours) or a greyscale image of ids, "
                         "or draw the object as a MASK instead.")
    return ids[inverse.reshape(-1)].reshape(arr.shape[:2]).astype(np.int64)


@dataclass(frozen=True)
class LabelEntry:
    """One label: position in the table, the value written in label maps, a name and a colour."""

    index: int
    value: int
    name: str
    color: Tuple[int, int, int]
    #: how well the name fits when a vocabulary named the label (:mod:`vidseg_core.naming`); None otherwise
    score: Optional[float] = None


@dataclass
class LabelTable:
    """The labels a coarse segmentation can contain, in ascending value order."""

    entries: List[LabelEntry] = field(default_factory=list)
    kind: str = "label"  # "label" (named from a reference) or "cluster" (no reference)

    @classmethod
    def from_values(cls, values: Iterable[int], names: Optional[Dict[int, str]] = None,
                    kind: str = "label") -> "LabelTable":
        vals = sorted({int(v) for v in values})
        names = names or {}
        prefix = "cluster" if kind == "cluster" else "label"
        return cls([LabelEntry(i, v, str(names.get(v, f"{prefix} {v}")), palette_color(v))
                    for i, v in enumerate(vals)], kind)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    @property
    def values(self) -> List[int]:
        return [e.value for e in self.entries]

    def entry(self, value: int) -> LabelEntry:
        for e in self.entries:
            if e.value == int(value):
                return e
        raise InputError(f"Label {value} is not in this label table ({self.values}).",
                         "Pick one of the table's values.")

    def color_of(self, value: int) -> Tuple[int, int, int]:
        return self.entry(value).color

    def name_of(self, value: int) -> str:
        return self.entry(value).name

    def colorize(self, labels) -> torch.Tensor:
        """uint8 RGB ``[..., 3]`` image of a label map; values outside the table are black."""
        lab = torch.as_tensor(labels).long()
        out = torch.zeros(*lab.shape, 3, dtype=torch.uint8)
        for e in self.entries:
            out[lab == e.value] = torch.tensor(e.color, dtype=torch.uint8)
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "entries": [
            {"index": e.index, "value": e.value, "name": e.name, "color": list(e.color)}
            | ({} if e.score is None else {"score": round(float(e.score), 6)}) for e in self.entries]}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelTable":
        return cls([LabelEntry(int(e["index"]), int(e["value"]), str(e["name"]), tuple(int(c) for c in e["color"]),
                               None if e.get("score") is None else float(e["score"]))
                    for e in d["entries"]], d.get("kind", "label"))


# ---------------------------------------------------------------- reference masks
def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    # source index of output i: floor((i + 0.5) * (n_in / n_out)), with the position accumulated by
    # repeated float64 addition as PIL does (matches Image.resize(..., NEAREST) exactly, also where
    # (i + 0.5) * scale lands on an integer)
    scale = n_in / n_out
    steps = np.full(n_out, scale, dtype=np.float64)
    steps[0] = 0.5 * scale
    return np.minimum(np.add.accumulate(steps).astype(np.int64), n_in - 1)


def resize_nearest(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest resize of an integer map to ``size = (h, w)``, pixel-centre sampling identical to PIL NEAREST."""
    H, W = mask.shape
    h, w = size
    return mask[_nearest_index(H, h)[:, None], _nearest_index(W, w)[None, :]]


def _label_values(ref: np.ndarray, void_values: Sequence[int], assign_void: bool) -> set:
    vals = np.unique(ref)
    return set(int(v) for v in (vals if assign_void else vals[~np.isin(vals, list(void_values))]))


def labels_lost_by_resize(original: np.ndarray, resized: np.ndarray, void_values: Sequence[int] = DEFAULT_VOID,
                          assign_void: bool = False) -> List[int]:
    """Label values of ``original`` that no pixel of ``resized`` keeps (regions smaller than the new pixels)."""
    return sorted(_label_values(np.asarray(original).astype(np.int64), void_values, assign_void)
                  - _label_values(np.asarray(resized).astype(np.int64), void_values, assign_void))


def note_grid_losses(assignment: ClusterAssignment, reference_mask, grid_reference_mask: np.ndarray,
                     void_values: Sequence[int] = DEFAULT_VOID, assign_void: bool = False) -> ClusterAssignment:
    """Add to ``assignment`` the reference labels present in the full mask ``reference_mask`` but absent
    from ``grid_reference_mask`` (the same mask at the feature grid, :func:`prepare_reference`): they can win
    no cluster, so they are lost for the whole video as well; listed in ``lost_at_grid`` and ``lost_labels``."""
    if grid_reference_mask is None or reference_mask is None:
        return assignment
    full = reference_mask.detach().cpu().numpy() if isinstance(reference_mask, torch.Tensor) else reference_mask
    full = np.asarray(full)
    full = full[..., 0] if full.ndim == 3 else full
    gone = sorted(_label_values(full.astype(np.int64), void_values, assign_void)
                  - _label_values(np.asarray(grid_reference_mask), void_values, assign_void))
    if gone:
        assignment.lost_at_grid = gone
        assignment.lost_labels = sorted(set(assignment.lost_labels) | set(gone))
    return assignment


def prepare_reference(reference_mask, grid: Tuple[int, int], frame_size: Optional[Tuple[int, int]] = None,
                      void_values: Sequence[int] = DEFAULT_VOID, assign_void: bool = False) -> np.ndarray:
    """Validate a reference label mask ``[H, W]`` and bring it to the feature grid (int64 ``[h, w]``)."""
    if isinstance(reference_mask, torch.Tensor):
        ref = reference_mask.detach().cpu().numpy()
    else:
        try:
            ref = np.asarray(reference_mask)
        except Exception as exc:
            raise InputError(f"Cannot read the reference mask ({type(reference_mask).__name__}): {exc}.",
                             "Pass a 2-D array of label ids.") from exc
    if ref.ndim == 3 and ref.shape[-1] == 1:
        ref = ref[..., 0]
    if ref.ndim != 2:
        raise InputError(f"The reference mask must be 2-D [H, W] label ids; got shape {ref.shape}.",
                         "Load palette PNGs as indices (PIL mode 'P'), not as RGB.")
    if ref.size == 0:
        raise InputError("The reference mask is empty.", "Give the label mask of the reference frame.")
    if ref.dtype == bool:
        ref = ref.astype(np.int64)
    if not np.issubdtype(ref.dtype, np.integer):
        if not np.issubdtype(ref.dtype, np.floating) or not np.all(np.isfinite(ref)) or np.any(ref != np.round(ref)):
            raise InputError(f"The reference mask must hold integer label ids, got dtype {ref.dtype}.",
                             "Load the mask as palette indices / integer ids.")
    ref = ref.astype(np.int64)
    if ref.min() < 0:
        raise InputError(f"The reference mask has negative values ({int(ref.min())}).", "Use label ids >= 0.")
    grid = (int(grid[0]), int(grid[1]))
    void = sorted(set(int(v) for v in void_values))
    if not assign_void and np.isin(ref, void).all():
        raise InputError(f"The reference mask has no labels: every pixel is void ({void}).",
                         f"Give a mask with at least one labelled region: any id other than {void} "
                         "(0 is a label too, e.g. the background).")
    if ref.shape != grid:
        if frame_size is not None and tuple(ref.shape) != tuple(frame_size):
            warnings.warn(f"Reference mask is {ref.shape[1]}x{ref.shape[0]} but the frames are "
                          f"{frame_size[1]}x{frame_size[0]}; resizing it (nearest) to the feature grid "
                          f"{grid[1]}x{grid[0]}.", UserWarning, stacklevel=3)
        full = ref.shape
        ref = resize_nearest(ref, grid)
        if not assign_void and np.isin(ref, void).all():
            raise InputError(f"Every labelled region of the reference mask is lost at the feature grid "
                             f"({grid[1]}x{grid[0]} cells for {full[1]}x{full[0]} px): each is smaller than a cell.",
                             "Label larger regions, or label part of the background (id 0) too.")
    return ref


@dataclass
class ClusterAssignment:
    """Result of naming KMeans clusters: ``mapping`` cluster id -> label value."""

    mapping: Dict[int, int]
    unassigned_clusters: List[int]
    lost_labels: List[int]
    kind: str  # "label" or "cluster"
    #: the part of ``lost_labels`` that vanished when the mask was brought to the feature grid (each region
    #: smaller than a cell: no cell centre falls on it), see :func:`note_grid_losses`
    lost_at_grid: List[int] = field(default_factory=list)


def assign_labels(clusters, num_clusters: int, reference_mask: Optional[np.ndarray] = None,
                  void_values: Sequence[int] = DEFAULT_VOID, assign_void: bool = False) -> ClusterAssignment:
    """Name the clusters of the reference frame (``clusters`` [h, w]) from ``reference_mask`` [h, w] (at grid size).

    Without a reference: cluster ids renumbered by first appearance in raster order.
    """
    cl = np.asarray(torch.as_tensor(clusters).cpu().numpy() if isinstance(clusters, torch.Tensor) else clusters)
    cl = cl.astype(np.int64).reshape(-1)
    if reference_mask is None:
        order = list(dict.fromkeys(cl.tolist()))  # first appearance, raster order
        mapping = {c: i for i, c in enumerate(order)}
        return ClusterAssignment(mapping, [c for c in range(num_clusters) if c not in mapping], [], "cluster")
    ref = np.asarray(reference_mask, dtype=np.int64).reshape(-1)
    if ref.shape != cl.shape:
        raise InputError(f"Reference ({ref.size} cells) and cluster map ({cl.size} cells) differ in size.",
                         "Resize the reference to the feature grid with prepare_reference.")
    voting = np.ones_like(ref, dtype=bool) if assign_void else ~np.isin(ref, list(void_values))
    mapping: Dict[int, int] = {}
    for c in np.unique(cl):
        vals = ref[(cl == c) & voting]
        if vals.size == 0:
            continue
        uniq, counts = np.unique(vals, return_counts=True)
        mapping[int(c)] = int(uniq[np.argmax(counts)])  # ties -> smallest value
    ref_labels = sorted(set(ref[voting].tolist()))
    won = set(mapping.values())
    return ClusterAssignment(mapping, [c for c in range(num_clusters) if c not in mapping],
                             [v for v in ref_labels if v not in won], "label")
