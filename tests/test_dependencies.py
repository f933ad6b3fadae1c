"""A diffusers or transformers that does not suit the installed torch is named, with the fix, before a model
is built (``vidseg_core/dependencies.py``), instead of a bare traceback from inside diffusers."""
import pytest

from vidseg_core import dependencies
from vidseg_core.backbones import load_backbone
from vidseg_core.errors import DependencyError


def _failing(name, exc):
    real = dependencies._import

    def fake(module):
        if module == name:
            raise exc
        return real(module)

    return fake


def test_a_diffusers_that_fails_to_import_under_this_torch_is_named_with_the_fix(monkeypatch):
    # what diffusers >= 0.41 does under torch 2.5
    monkeypatch.setattr(dependencies, "_import",
                        _failing("diffusers", AttributeError("module 'torch' has no attribute 'accelerator'")))
    with pytest.raises(DependencyError, match=r"diffusers does not import with torch .*accelerator.*"
                                              r"Upgrade torch to 2\.6 or newer.*diffusers==0\.30\.3"):
        load_backbone("tiny-sd", device="cpu")


@pytest.mark.parametrize("name", ["diffusers", "transformers"])
def test_a_missing_library_says_what_to_install(monkeypatch, name):
    monkeypatch.setattr(dependencies, "_import", _failing(name, ModuleNotFoundError(f"No module named {name!r}")))
    with pytest.raises(DependencyError, match=f"{name} is not installed.*requirements.txt") as info:
        load_backbone("tiny-svd", device="cpu")
    assert isinstance(info.value, ImportError)


def test_transformers_without_its_pytorch_models_is_named_with_the_fix(monkeypatch):
    import transformers

    # what transformers 5 does under torch 2.5: it imports, then hands out placeholder classes
    monkeypatch.setattr(transformers.utils, "is_torch_available", lambda: False)
    with pytest.raises(DependencyError, match=r"transformers .* has disabled its PyTorch models.*"
                                              r"transformers==4\.40\.2"):
        load_backbone("tiny-sd", device="cpu")


def test_the_cpu_feed_forward_needs_diffusers_only(monkeypatch):
    """ComfyUI's own models need no transformers: the CPU feed-forward split checks diffusers alone."""
    import torch
    import transformers

    from vidseg_core.cpu_memory import feed_forward_by_rows

    monkeypatch.setattr(transformers.utils, "is_torch_available", lambda: False)
    with feed_forward_by_rows(torch.nn.Linear(2, 2), rows=2):
        pass
    monkeypatch.setattr(dependencies, "_import", _failing("diffusers", AttributeError("torch.accelerator")))
    with pytest.raises(DependencyError, match="diffusers does not import"):
        with feed_forward_by_rows(torch.nn.Linear(2, 2), rows=2):
            pass
