"""Vocabularies (class lists with synonyms) and prompt templates, read from data files.

A vocabulary file has one class per line, ``KIND<TAB>syn1, syn2, ...`` with KIND ``thing`` or
``stuff`` (optional: without it the kind is guessed, see :func:`guess_kind`); ``#`` starts a
comment line. On the command line, classes are separated by commas and synonyms by ``/``:
``"person/child, zebra, traffic cone/pylon"``. In Python, a list has one entry per class
(:func:`as_vocabulary`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"
TEMPLATE_DIR = VOCAB_DIR / "templates"

# The vocabularies shipped in vocab/: short name -> (file name, title). The one list that the
# command line, the web demo and the docs read.
SHIPPED_VOCABULARIES = {
    "coco": ("coco_panoptic", "COCO panoptic"),
    "ade150": ("ade20k_150", "ADE20K"),
    "ade847": ("ade20k_847", "ADE20K full"),
    "pc59": ("pascal_context_59", "Pascal Context"),
    "pc459": ("pascal_context_459", "Pascal Context full"),
    "voc21": ("pascal_voc_21", "Pascal VOC"),
    "cityscapes": ("cityscapes", "Cityscapes"),
    "lvis": ("lvis", "LVIS"),
    "synthetic_world": ("synthetic_world", "Synthetic shapes world"),
}
# Other names accepted for them.
ALIASES = {"voc": "pascal_voc_21"} | {
    short: stem for short, (stem, _) in SHIPPED_VOCABULARIES.items() if short != stem
}


@dataclass(frozen=True)
class Vocabulary:
    """Classes in index order; each class is a tuple of synonyms (the first is its name).

    ``kind_sources`` says, per class, where its thing / stuff kind came from: "given" (a file's
    KIND column, a ``thing:`` / ``stuff:`` prefix), "trained" (the model's training class of
    that name, :meth:`with_kinds_from`), "stuff name" (a COCO / ADE20K stuff name) or "default"
    (a thing); empty means all given.
    """

    classes: tuple[tuple[str, ...], ...]
    is_thing: tuple[bool, ...]
    name: str = "custom"
    kind_sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.classes) == 0:
            raise ValueError("the class list is empty: give at least one class name")
        if len(self.classes) != len(self.is_thing):
            raise ValueError("classes and is_thing must have the same length")
        for index, synonyms in enumerate(self.classes):
            if not synonyms or any(not s for s in synonyms):
                raise ValueError(f"class {index} has an empty name: remove the empty entry")
        if self.kind_sources and len(self.kind_sources) != len(self.classes):
            raise ValueError("kind_sources must have one entry per class")

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [synonyms[0] for synonyms in self.classes]

    @property
    def num_synonyms(self) -> list[int]:
        return [len(synonyms) for synonyms in self.classes]

    @property
    def synonyms(self) -> list[str]:
        """All synonyms, class-major (the order of the text-classifier rows)."""
        return [s for synonyms in self.classes for s in synonyms]

    @property
    def guessed_kinds(self) -> list[tuple[str, bool, str]]:
        """(name, is_thing, source) of every class whose kind was not given."""
        return [
            (synonyms[0], thing, source)
            for synonyms, thing, source in zip(
                self.classes, self.is_thing, self.kind_sources, strict=False
            )
            if source != "given"
        ]

    def with_kinds_from(self, trained: Vocabulary) -> Vocabulary:
        """The kinds of a model's training classes replace guessed kinds: a class with a
        synonym (case-insensitive) of a training class takes that class's kind. Given kinds
        stay as they are."""
        known = {
            s.casefold(): thing
            for synonyms, thing in zip(trained.classes, trained.is_thing, strict=True)
            for s in synonyms
        }
        kinds, sources = list(self.is_thing), list(self.kind_sources)
        for index, (synonyms, source) in enumerate(zip(self.classes, sources, strict=False)):
            match = next((known[s.casefold()] for s in synonyms if s.casefold() in known), None)
            if source != "given" and match is not None:
                kinds[index], sources[index] = match, "trained"
        if kinds == list(self.is_thing) and sources == list(self.kind_sources):
            return self
        return dataclasses.replace(self, is_thing=tuple(kinds), kind_sources=tuple(sources))


def describe_guessed_kinds(vocab: Vocabulary) -> str | None:
    """One line naming the classes whose kind was guessed, or None when every kind was given:
    'kinds guessed: house thing (trained), sky stuff (stuff name) ...'."""
    guessed = vocab.guessed_kinds
    if not guessed:
        return None
    words = {"trained": "model's training class", "stuff name": "COCO/ADE stuff name"}
    parts = [
        f"{name} {'thing' if thing else 'stuff'} ({words.get(source, source)})"
        for name, thing, source in guessed
    ]
    return (
        f"kinds guessed: {', '.join(parts)}; set them with thing:NAME or stuff:NAME "
        '(e.g. --classes "thing:house, stuff:brick")'
    )


def split_synonyms(text: str, separator: str = ",") -> tuple[str, ...]:
    """Split one class entry into synonyms the way the official code does (", " -> ",")."""
    if separator == ",":
        text = text.replace(", ", ",")
    return tuple(s.strip() for s in text.split(separator) if s.strip())


def parse_vocabulary_text(text: str, *, name: str = "custom") -> Vocabulary:
    """A vocabulary file's text -> Vocabulary (a leading UTF-8 byte-order mark is ignored).
    Raises ValueError naming the line of a bad kind or an empty class."""
    classes, kinds, sources = [], [], []
    for line_number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        kind, _, entry = line.partition("\t") if "\t" in line else ("", "", line)
        kind = kind.strip().lower()
        if kind not in ("", "thing", "stuff"):
            raise ValueError(
                f"{name}: line {line_number} starts with '{kind}': use 'thing<TAB>', "
                "'stuff<TAB>' or no kind"
            )
        synonyms = split_synonyms(entry)
        if not synonyms:
            raise ValueError(f"{name}: line {line_number} has no class name")
        classes.append(synonyms)
        thing, source = (kind == "thing", "given") if kind else guess_kind(synonyms)
        kinds.append(thing)
        sources.append(source)
    if not classes:
        raise ValueError(f"{name}: the vocabulary has no classes")
    return Vocabulary(tuple(classes), tuple(kinds), name=name, kind_sources=tuple(sources))


def _kind_prefix(entry: str) -> tuple[bool | None, str]:
    """'thing:house' -> (True, 'house'), 'stuff: brick' -> (False, 'brick'), else (None, entry)."""
    head, colon, rest = entry.partition(":")
    if colon and head.strip().lower() in ("thing", "stuff"):
        return head.strip().lower() == "thing", rest
    return None, entry


def parse_class_list(text: str) -> Vocabulary:
    """Parse a command-line class list: commas between classes, '/' between synonyms, and an
    optional kind prefix per class (``"thing:house, stuff:brick/bricks, sky"``).

    Raises ValueError for an empty list, and for any empty name in it, never dropping one
    silently: ``"cat,,dog"`` (class 2), ``"thing:, dog"`` (a kind without a name),
    ``"cat//kitty"`` (an empty synonym)."""
    if not any(part.strip() for part in text.replace("/", ",").split(",")):
        raise ValueError('the class list is empty: give names like --classes "cat, dog"')
    classes, kinds = [], []
    for number, entry in enumerate(text.split(","), start=1):
        kind, rest = _kind_prefix(entry)
        synonyms = tuple(s.strip() for s in rest.split("/"))
        if not any(synonyms):
            what = f"'{entry.strip()}' has no name" if entry.strip() else "is empty"
            raise ValueError(
                f'classes "{text}": class {number} {what}: remove the extra comma or name the class'
            )
        if not all(synonyms):
            raise ValueError(
                f"classes \"{text}\": class {number} ('{entry.strip()}') has an empty "
                "synonym: remove the extra '/'"
            )
        classes.append(synonyms)
        kinds.append(kind)
    return _custom_vocabulary(classes, kinds)


def vocabulary_from_list(entries: Sequence[str | Sequence[str]]) -> Vocabulary:
    """One class per list entry.

    A string entry is one class whose synonyms are separated by '/' or ',' (``"traffic
    cone/pylon"`` and ``"traffic cone, pylon"`` are the same class); a list or tuple entry
    gives its synonyms as they are, split no further (``["AC/DC poster"]``). Kinds (thing or
    stuff) are guessed as for the command line. Raises ValueError for an empty list, an empty
    entry or a name given twice.
    """
    classes, kinds = [], []
    for index, entry in enumerate(entries):
        kind = None
        if isinstance(entry, str):
            kind, entry = _kind_prefix(entry)
            synonyms = tuple(s.strip() for s in entry.replace(",", "/").split("/") if s.strip())
        elif isinstance(entry, Sequence) and all(isinstance(s, str) for s in entry):
            synonyms = tuple(s.strip() for s in entry if s.strip())
        else:
            raise ValueError(
                f"vocabulary entry {index + 1} is {entry!r}: give a class name (str) or a list "
                "of its synonyms"
            )
        if not synonyms:
            raise ValueError(f"vocabulary entry {index + 1} has no class name: remove it")
        classes.append(synonyms)
        kinds.append(kind)
    if not classes:
        raise ValueError('the class list is empty: give names like ["cat", "dog"]')
    return _custom_vocabulary(classes, kinds)


def _custom_vocabulary(
    classes: list[tuple[str, ...]], kinds: list[bool | None] | None = None
) -> Vocabulary:
    """A user's classes: duplicates refused; kinds given (True / False) or guessed (None)."""
    seen: dict[str, int] = {}
    for index, synonyms in enumerate(classes):
        for synonym in synonyms:
            key = synonym.casefold()
            if key in seen:
                raise ValueError(
                    f"class name '{synonym}' is given twice (classes {seen[key] + 1} and "
                    f"{index + 1}): remove the duplicate"
                )
            seen[key] = index
    kinds = kinds or [None] * len(classes)
    resolved = [
        guess_kind(c) if kind is None else (kind, "given")
        for c, kind in zip(classes, kinds, strict=True)
    ]
    return Vocabulary(
        tuple(classes),
        tuple(thing for thing, _ in resolved),
        name="custom",
        kind_sources=tuple(source for _, source in resolved),
    )


VocabularyLike = Vocabulary | str | Path | Sequence[str | Sequence[str]]


def as_vocabulary(vocabulary: VocabularyLike) -> Vocabulary:
    """A :class:`Vocabulary` from any of the forms the API takes:

    - a Vocabulary, returned as it is;
    - a str or Path: a shipped vocabulary's name (``"ade150"``, ``"coco"`` ...) or a file;
    - a list or tuple: one class per entry (:func:`vocabulary_from_list`), e.g.
      ``["traffic cone/pylon", "sky"]`` or ``[["traffic cone", "pylon"], "sky"]``: 2 classes.
    """
    if isinstance(vocabulary, Vocabulary):
        return vocabulary
    if isinstance(vocabulary, (str, Path)):
        return load_vocabulary(vocabulary)
    if isinstance(vocabulary, Sequence):
        return vocabulary_from_list(vocabulary)
    raise ValueError(
        f"a vocabulary is a name, a file or a list of class names, not {type(vocabulary).__name__}"
    )


def builtin_vocabularies() -> list[str]:
    return sorted(p.stem for p in VOCAB_DIR.glob("*.txt"))


def load_vocabulary(name_or_path: str | Path) -> Vocabulary:
    """A shipped vocabulary by name (``coco``, ``ade20k_150`` ...) or a vocabulary file."""
    key = str(name_or_path)
    key = ALIASES.get(key, key)
    builtin = VOCAB_DIR / f"{key}.txt"
    path = builtin if builtin.exists() else Path(name_or_path)
    if not path.is_file():
        names = ", ".join(SHIPPED_VOCABULARIES)
        hint = ' (to name classes in Python, pass a list: ["cat", "dog"])' if "," in key else ""
        raise FileNotFoundError(
            f"no vocabulary '{name_or_path}': give a vocabulary file or one of: {names}{hint}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # Windows editors' byte-order mark
    except UnicodeDecodeError as error:
        raise ValueError(f"vocabulary file {path} is not UTF-8 text ({error})") from error
    return parse_vocabulary_text(text, name=path.stem)


@functools.lru_cache(maxsize=1)
def _known_stuff_synonyms() -> frozenset[str]:
    stuff = set()
    for name in ("coco_panoptic", "ade20k_150"):
        path = VOCAB_DIR / f"{name}.txt"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            kind, _, entry = line.partition("\t")
            if kind == "stuff":
                stuff.update(s.casefold() for s in split_synonyms(entry))
    return frozenset(stuff)


def guess_kind(synonyms: tuple[str, ...]) -> tuple[bool, str]:
    """(is_thing, source): stuff when one of the names is a stuff class of COCO or ADE20K
    ("stuff name"), else a thing ("default")."""
    known_stuff = _known_stuff_synonyms()
    if any(s.casefold() in known_stuff for s in synonyms):
        return False, "stuff name"
    return True, "default"


def seen_class_mask(vocab: Vocabulary, train_vocab: Vocabulary) -> list[bool]:
    """A test class is seen when one of its synonyms equals a synonym of any training class."""
    train_synonyms = set(train_vocab.synonyms)
    return [any(s in train_synonyms for s in synonyms) for synonyms in vocab.classes]


def load_templates(name_or_path: str | Path) -> list[str]:
    """Prompt templates, one per line, each with one ``{}`` for the class name."""
    builtin = TEMPLATE_DIR / f"{name_or_path}.txt"
    path = builtin if builtin.exists() else Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt-template file '{name_or_path}'")
    templates = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(f"{path}: every template needs exactly one '{{}}' (bad: {bad[:3]})")
    return templates
