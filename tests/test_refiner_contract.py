"""Contract every Refiner must honour (modelled on diffusers' scheduler contract tests).

``refine(labels [T, h, w] int64, corr_features [T, h, w, C]) -> labels [T, h, w] int64``:
same shape and dtype, values only from the input label set, deterministic, inputs untouched,
works with T = 1 and tiny grids, single-label input unchanged.
"""
import pytest
import torch

from vidseg_core import refiners
from vidseg_core.refiners import CBRRefiner, NoRefiner, Refiner, get_refiner

IMPLEMENTATIONS = [
    NoRefiner(),
    CBRRefiner(),
    CBRRefiner(radius_sq=None),
    CBRRefiner(radius_sq=8),
    CBRRefiner(compat=True),
    CBRRefiner(compat=True, signed=False),
]
IDS = [repr(r) for r in IMPLEMENTATIONS]


def _case(T=5, h=4, w=6, C=8, values=(0, 3, 255), seed=0):
    g = torch.Generator().manual_seed(seed)
    vals = torch.tensor(values)
    labels = vals[torch.randint(0, len(values), (T, h, w), generator=g)]
    feats = torch.randn(T, h, w, C, generator=g)
    return labels, feats


def test_every_refiner_class_is_covered():
    covered = {type(r) for r in IMPLEMENTATIONS}
    subclasses = {c for c in Refiner.__subclasses__() if c.__module__.startswith("vidseg_core")}
    assert subclasses <= covered, f"add {subclasses - covered} to IMPLEMENTATIONS"
    for name in refiners.REFINERS:
        assert isinstance(get_refiner(name), Refiner)


@pytest.mark.parametrize("refiner", IMPLEMENTATIONS, ids=IDS)
def test_shape_dtype_and_label_set(refiner):
    labels, feats = _case()
    out = refiner.refine(labels, feats)
    assert out.shape == labels.shape and out.dtype == torch.long
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())


@pytest.mark.parametrize("refiner", IMPLEMENTATIONS, ids=IDS)
def test_deterministic(refiner):
    labels, feats = _case(seed=1)
    assert torch.equal(refiner.refine(labels, feats), refiner.refine(labels.clone(), feats.clone()))


@pytest.mark.parametrize("refiner", IMPLEMENTATIONS, ids=IDS)
def test_inputs_not_modified_and_output_is_new(refiner):
    labels, feats = _case(seed=2)
    l0, f0 = labels.clone(), feats.clone()
    out = refiner.refine(labels, feats)
    assert torch.equal(labels, l0) and torch.equal(feats, f0)
    out[...] = -1  # writing the result must not touch the input
    assert torch.equal(labels, l0)


@pytest.mark.parametrize("refiner", IMPLEMENTATIONS, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 4, 6), (1, 1, 1), (3, 1, 1), (4, 1, 2), (4, 2, 1), (2, 3, 3)])
def test_small_shapes(refiner, shape):
    labels, feats = _case(*shape)
    out = refiner.refine(labels, feats)
    assert out.shape == labels.shape
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())
    if shape[0] == 1:  # one frame: nothing to correspond with
        assert torch.equal(out, labels)


@pytest.mark.parametrize("refiner", IMPLEMENTATIONS, ids=IDS)
def test_single_label_unchanged(refiner):
    _, feats = _case(seed=3)
    labels = torch.full((5, 4, 6), 7, dtype=torch.long)
    assert torch.equal(refiner.refine(labels, feats), labels)


@pytest.mark.parametrize("refiner", IMPLEMENTATIONS, ids=IDS)
def test_large_label_values(refiner):
    labels, feats = _case(values=(1000, 5, 70000), seed=4)
    out = refiner.refine(labels, feats)
    assert set(out.unique().tolist()) <= {1000, 5, 70000}


def test_get_refiner_rejects_unknown():
    from vidseg_core.errors import InputError

    with pytest.raises(InputError, match="Unknown refiner"):
        get_refiner("crf")

    class Duck:
        def refine(self, labels, feats):
            return labels

    with pytest.raises(InputError, match="not a vidseg_core.refiners.Refiner"):
        get_refiner(Duck())
