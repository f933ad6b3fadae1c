"""``segment``'s naming options: ``--vocabulary``, ``--name-threshold``, ``--tokenizer``, ``--namer``, ``--select``."""
from __future__ import annotations

import sys

from ..errors import InputError


def add_naming_arguments(p, select: bool = True) -> None:
    p.add_argument("--vocabulary", default=None, metavar="WORDS|FILE|LIST",
                   help="name the regions with these words: 'sky, water, person', a text file (one word a line) "
                        "or a shipped list (vspw, ade20k, everyday); SD 2.1 only, or SVD with --namer")
    p.add_argument("--name-threshold", type=float, default=None, metavar="S",
                   help="mean word score (0..1) a label's best word needs to name it (default: twice chance, 2/W)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="CLIP tokenizer folder (vocab.json + merges.txt) for --vocabulary, e.g. the tokenizer/ of an "
                        "SD 2.1 diffusers model (needed with single .safetensors files)")
    p.add_argument("--namer", default=None, metavar="MODEL",
                   help="SD 2.1 checkpoint that names the regions when --model is SVD (SVD has no text encoder)")
    if not select:
        return
    p.add_argument("--select", default=None, metavar="NAMES",
                   help="also write selection/<frame>.png: white where the label is one of these names or values "
                        "(e.g. 'sky, water' or '3')")


def naming_settings(args):
    """:class:`~vidseg_core.naming.segmenter.NamingSettings` from the arguments (None without --vocabulary),
    checked before any model is loaded."""
    if args.vocabulary is None:
        for opt in ("name_threshold", "tokenizer", "namer"):
            if getattr(args, opt) is not None:
                raise InputError(f"--{opt.replace('_', '-')} is given without --vocabulary.",
                                 "Add --vocabulary (words, a file, or vspw / ade20k / everyday).")
        return None
    from ..naming.namer import check_threshold
    from ..naming.segmenter import NamingSettings
    from ..naming.vocabulary import load_vocabulary

    return NamingSettings(load_vocabulary(args.vocabulary), check_threshold(args.name_threshold), args.tokenizer)


def load_namer(args, naming, backbone):
    """The namer backbone (``--namer``), or a refusal when the model cannot name on its own."""
    from ..run_inputs import load_namer as load

    return load(naming, backbone, args.namer, args.device, args.precision)


def write_selection(args, folder, names, table) -> list:
    """``selection/<frame>.png`` from the written label maps; returns the selected values."""
    from PIL import Image

    from ..metrics.io import read_label_png
    from ..naming.selection import select_values, selection_mask

    values = select_values(args.select, table)
    if not values:
        print("note: --select chose no label; the selection masks are empty", file=sys.stderr)
    for n in names:
        mask = selection_mask(read_label_png(folder.path / f"labels/{n}.png"), values)
        with folder.writing(f"selection/{n}.png") as path:
            Image.fromarray(mask, mode="L").save(str(path))
    return values
