"""Where ``ovseg predict`` writes, and when it may skip: output names that never collide, the
settings recorded in each JSON, and the check that outputs on disk were made with the same
ones. Every command checks its output folder with :func:`check_writable` (or
:func:`writable_folder`) before any work."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ovseg.fileio import atomic_write_many
from ovseg.video import VIDEO_SUFFIXES


class UsageError(ValueError):
    """Bad input from the user: one line, non-zero exit, nothing written."""


def output_stems(inputs: list[Path]) -> dict[Path, str]:
    """The name stem of each input's outputs: the file's stem, or ``stem_ext`` when two inputs
    share a stem (``a.jpg`` and ``a.png`` -> ``a_jpg``, ``a_png``; same names in different
    folders -> the parent folder's name too). Raises UsageError if names still collide."""
    by_stem: dict[str, list[Path]] = {}
    for path in inputs:
        by_stem.setdefault(path.stem, []).append(path)
    stems = {}
    for stem, paths in by_stem.items():
        for path in paths:
            if len(paths) == 1:
                stems[path] = stem
            elif len({p.suffix.lower() for p in paths}) == len(paths):
                stems[path] = f"{stem}_{path.suffix.lower().lstrip('.')}"
            else:
                stems[path] = f"{path.parent.name}_{stem}_{path.suffix.lower().lstrip('.')}"
    if len(set(stems.values())) < len(stems):
        clash = sorted(s for s in stems.values() if list(stems.values()).count(s) > 1)[0]
        raise UsageError(f"two inputs would both write outputs named '{clash}': rename one")
    return stems


def output_paths(
    directory: Path,
    image: Path,
    stem: str,
    *,
    heatmaps: list[str] | None = None,
    segment: bool = True,
) -> dict[str, Path]:
    """The files one input writes, named ``stem`` (see :func:`output_stems`): overlay, labels
    (when ``segment``) and JSON, and ``heatmap N`` per heat-map phrase (an image); overlay and
    per-frame JSON (a video)."""
    if image.suffix.lower() in VIDEO_SUFFIXES:
        return {
            "overlay": directory / f"{stem}_overlay.mp4",
            "json": directory / f"{stem}_frames.json",
        }
    paths = {"json": directory / f"{stem}.json"}
    if segment:
        paths["overlay"] = directory / f"{stem}_overlay.png"
        paths["labels"] = directory / f"{stem}_labels.png"
    for index, phrase in enumerate(heatmaps or []):
        paths[f"heatmap {index}"] = directory / f"{stem}_heatmap_{index + 1}{slug(phrase)}.png"
    return paths


def slug(phrase: str) -> str:
    """A file-name part for a phrase: ``_red-car`` (ASCII letters and digits, at most 40), or
    nothing when none is left (the heat map's number names it alone)."""
    part = re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-")[:40].strip("-")
    return f"_{part}" if part else ""


def run_settings(args, model: str, vocabulary, image: Path) -> dict:
    """What an output depends on, recorded in its JSON (``settings``): the model, the classes
    with their synonyms and given kinds, the task, the precision asked for, the sizes, and the
    source file."""
    stat = image.stat()
    given = classes = None  # heat maps only
    if vocabulary is not None:
        classes = [list(synonyms) for synonyms in vocabulary.classes]
        given = [
            ("thing" if thing else "stuff") if source == "given" else None
            for thing, source in zip(
                vocabulary.is_thing,
                vocabulary.kind_sources or ["given"] * len(vocabulary),
                strict=True,
            )
        ]
    return {
        "model": model,
        "classes": classes,
        "given_kinds": given,
        "task": args.task if vocabulary is not None else None,
        "head": getattr(args, "head", "fcclip"),
        "heatmaps": getattr(args, "heatmap", None),
        "precision": args.precision,
        "short_side": args.short_side,
        "max_output_pixels": args.max_output_pixels,
        "score_threshold": args.score_threshold if args.task == "instance" else None,
        "max_frames": args.max_frames if image.suffix.lower() in VIDEO_SUFFIXES else None,
        "masks": _mask_settings(args),
        "source": {
            "path": str(image.resolve()),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        },
    }


def _mask_settings(args) -> dict:
    """Where masks came from and the prompts, as recorded in ``settings``."""
    masks = getattr(args, "masks", "model")
    return {
        "source": masks,
        "sam_model": args.sam_model if masks == "sam" else None,
        "sam_weights": args.sam_weights if masks == "sam" else None,
        "points": getattr(args, "points", None),
        "boxes": getattr(args, "boxes", None),
    }


def is_up_to_date(paths: dict[str, Path], settings: dict) -> bool:
    """True when every output exists and the JSON says it was made with ``settings``."""
    if not all(path.is_file() for path in paths.values()):
        return False
    try:
        record = json.loads(paths["json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("settings") == settings


def check_writable(directory: str | Path, *, option: str = "--output") -> bool:
    """Create ``directory`` if needed and check a file can be written there; UsageError naming
    ``option`` (the argument to change) if not. Returns whether it was created (so that a run
    that writes nothing can remove it again)."""
    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ovseg-check-"):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write to output directory {directory} ({error.strerror or error}): "
            f"choose another {option}"
        ) from error
    return created


@contextlib.contextmanager
def writable_folder(directory: str | Path, *, option: str = "--output") -> Iterator[Path]:
    """:func:`check_writable` before the work in the ``with`` block; on the way out (an error
    or Ctrl-C included) the folder is removed again when this run made it and left it empty."""
    directory = Path(directory)
    created = check_writable(directory, option=option)
    try:
        yield directory
    finally:
        if created and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def write_outputs(outputs: dict) -> None:
    """Write one input's files (path -> PIL image, saved as PNG, or a JSON record) through
    temp names and rename them together: no partial outputs."""

    def writer(value):
        if isinstance(value, dict):
            text = json.dumps(value, ensure_ascii=False, indent=1)
            return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")
        return lambda tmp: value.save(tmp, format="PNG")

    atomic_write_many({path: writer(value) for path, value in outputs.items()})
