"""The words regions may be named with.

A vocabulary is a list of entries; each entry has a *name* (what a label is called) and one or more
*phrases* (what the text encoder reads; their keys are averaged, :mod:`.cross_attention`).  Sources:

* the shipped lists, by name: ``vspw`` (124 classes, in id order), ``ade20k`` (150), ``everyday`` (40);
* a file: one entry a line, ``#`` comments; ``name: phrase | phrase`` gives an entry several phrases;
* text: entries separated by commas, semicolons or new lines (``"sky, water, person"``).

A class name written ``a_or_b`` (VSPW's style) reads as the phrases ``a`` and ``b``; other underscores
are spaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

from ..errors import InputError

DATA_DIR = Path(__file__).resolve().parent / "data"
#: the shipped lists and their sizes
BUILTIN = {"vspw": 124, "ade20k": 150, "everyday": 40}
#: at most this many tokens of one phrase are read (the text tower holds 77 with start and end)
MAX_PHRASE_TOKENS = 75


@dataclass(frozen=True)
class VocabularyEntry:
    name: str
    phrases: Tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    entries: Tuple[VocabularyEntry, ...]
    source: str = "user"

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> List[str]:
        return [e.name for e in self.entries]

    def to_dict(self) -> dict:
        return {"source": self.source, "size": len(self), "names": self.names}


def phrases_of(name: str) -> Tuple[str, ...]:
    """``"handrail_or_fence"`` -> ``("handrail", "fence")``; ``"traffic_light"`` -> ``("traffic light",)``."""
    parts = [p.replace("_", " ").strip().lower() for p in name.split("_or_")]
    return tuple(" ".join(p.split()) for p in parts if p.strip())


def _entry(item: str, where: str) -> VocabularyEntry:
    name, sep, rest = item.partition(":")
    name = " ".join(name.split())
    if sep:
        phrases = tuple(" ".join(p.lower().split()) for p in rest.split("|") if p.strip())
        if not name or not phrases:
            raise InputError(f"Cannot read the vocabulary entry {item!r} ({where}).",
                             "Write 'name: phrase | phrase', or just the word.")
        return VocabularyEntry(name, phrases)
    phrases = phrases_of(name)
    if not phrases:
        raise InputError(f"Empty vocabulary entry {item!r} ({where}).", "Remove it or write a word.")
    return VocabularyEntry(name, phrases)


def vocabulary_from_items(items: Sequence[str], source: str = "user") -> Vocabulary:
    """Entries from strings; duplicates (same name, case-insensitive) are an error, as is an empty list."""
    entries, seen = [], {}
    for item in items:
        if not str(item).strip():
            continue
        e = _entry(str(item).strip(), source)
        key = e.name.lower()
        if key in seen:
            raise InputError(f"The vocabulary names {e.name!r} twice ({source}).", "Give each word once.")
        seen[key] = e
        entries.append(e)
    if not entries:
        raise InputError(f"The vocabulary is empty ({source}).",
                         "Give words ('sky, water, person'), a file, or a shipped list: " + ", ".join(BUILTIN) + ".")
    return Vocabulary(tuple(entries), source)


def read_vocabulary_file(path) -> Vocabulary:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the vocabulary file {p}: {exc}.", "Give a UTF-8 text file, one word a line.") \
            from exc
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return vocabulary_from_items(lines, p.name)


def builtin_vocabulary(name: str) -> Vocabulary:
    key = name.strip().lower()
    if key not in BUILTIN:
        raise InputError(f"No shipped vocabulary is called {name!r}.", "Use one of: " + ", ".join(BUILTIN) + ".")
    voc = read_vocabulary_file(DATA_DIR / f"{key}.txt")
    return Vocabulary(voc.entries, key)


def load_vocabulary(spec) -> Vocabulary:
    """A :class:`Vocabulary` from a shipped list's name, a file path, words in text, or a list of words."""
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, (list, tuple)):
        return vocabulary_from_items([str(item) for item in spec])
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("No vocabulary was given.",
                         "Give words ('sky, water, person'), a file, or a shipped list: " + ", ".join(BUILTIN) + ".")
    text = spec.strip()
    if text.lower() in BUILTIN:
        return builtin_vocabulary(text)
    if "," not in text and ";" not in text and "\n" not in text:
        p = Path(text).expanduser()
        if p.is_file():
            return read_vocabulary_file(p)
        if p.suffix.lower() in (".txt", ".csv", ".list") or "/" in text or "\\" in text:
            raise InputError(f"The vocabulary file {text!r} does not exist.",
                             "Check the path, or give the words themselves separated by commas.")
    items = text.replace("\n", ",").replace(";", ",").split(",")
    return vocabulary_from_items(items)
