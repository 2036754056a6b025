"""Named models: config preset, where the weights come from, and where they are kept.

Weights live in ``$OVSEG_WEIGHTS`` (default ``~/.cache/ovseg/weights``). Official checkpoints
are downloaded atomically (temp file + rename), checked against their sha256 when known, and
converted once to ovseg's safetensors format. An answer that is not the checkpoint (an HTML
page, a truncated or wrongly sized body, a failed checksum) is refused whole, and the error says
how to fetch the file by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ovseg.assets import ASSETS_DIR
from ovseg.fileio import atomic_write


@dataclass(frozen=True)
class ZooEntry:
    name: str
    config: str  # preset in configs/
    filename: str  # file name in the weights directory
    description: str
    url: str | None = None  # official release (None: shipped with the project)
    sha256: str | None = None  # of the downloaded file, when known
    size: int | None = None  # bytes of the downloaded file, when known
    shipped_path: str | None = None  # package data, relative to ovseg/assets/
    meaningful: bool = True  # False for random-weight test models
    # A toy model knows this vocabulary's world only (photos and other classes: nonsense).
    toy_vocabulary: str | None = None
    weights_flag: str = "--weights"  # the command-line option that takes a weights file


MODEL_ZOO = {
    "fcclip_convnext_large_coco": ZooEntry(
        name="fcclip_convnext_large_coco",
        config="fcclip_convnext_large_coco",
        filename="fcclip_cocopan.pth",
        description="FC-CLIP ConvNeXt-L trained on COCO panoptic (official release, "
        "COCO PQ 54.4, ADE20K PQ 26.8 zero-shot)",
        # The official FC-CLIP release (Google Drive, linked from the FC-CLIP README). Its size
        # and sha256 are not published there, so neither is recorded.
        url="https://drive.google.com/uc?export=download&id=1-91PIns86vyNaL3CzMmDD39zKGnPMtvj",
    ),
    "synthetic_tiny": ZooEntry(
        name="synthetic_tiny",
        config="synthetic_tiny",
        filename="synthetic_tiny.safetensors",
        description="small FC-CLIP trained on the synthetic shapes world "
        "(ovseg synthetic-world): knows shapes and textures only (vocab synthetic_world)",
        shipped_path="synthetic_tiny/synthetic_tiny.safetensors",
        toy_vocabulary="synthetic_world",
    ),
    "fcclip_tiny_parity": ZooEntry(
        name="fcclip_tiny_parity",
        config="fcclip_tiny_parity",
        filename="fcclip_tiny_official.pth",
        description="tiny FC-CLIP with RANDOM weights (the parity fixture of the tests, "
        "tests/data/parity_tiny/): shows the pipeline runs; its predictions mean nothing",
        meaningful=False,
    ),
}
DEFAULT_MODEL = "fcclip_convnext_large_coco"
# Used, and said, when the default model's weights are missing: the first one shipped.
FALLBACK_MODELS = ("synthetic_tiny",)


def model_tag(name: str) -> str:
    """The model's name as pictures show it: 'synthetic_tiny (toy: synthetic shapes only)'."""
    if name.replace("-", "_") not in MODEL_ZOO:
        return name
    entry = get_entry(name)
    if not entry.meaningful:
        return f"{entry.name} (RANDOM weights)"
    return f"{entry.name} (toy: synthetic shapes only)" if entry.toy_vocabulary else entry.name


def model_caveat(name: str, classes: list | None = None) -> str | None:
    """One short line saying when a model's outputs cannot be trusted, or None: a random
    model; a toy model (its world only), naming the classes (synonym tuples or names) none
    of whose names it was taught."""
    if name.replace("-", "_") not in MODEL_ZOO:
        return None  # a user's weights file: nothing known about it
    entry = get_entry(name)
    if not entry.meaningful:
        return f"{entry.name} has RANDOM weights: its outputs mean nothing"
    if entry.toy_vocabulary is None:
        return None
    from ovseg.vocabulary import load_vocabulary

    known = {s.casefold() for s in load_vocabulary(entry.toy_vocabulary).synonyms}
    synonym_lists = [(c,) if isinstance(c, str) else tuple(c) for c in classes or []]
    unknown = [
        synonyms[0]
        for synonyms in synonym_lists
        if not any(s.casefold() in known for s in synonyms)
    ]
    line = (
        f"{entry.name} is a toy model of the synthetic shapes world "
        f"(vocabulary {entry.toy_vocabulary}): expect nonsense on photos"
    )
    if unknown:
        shown = ", ".join(unknown[:6]) + (
            f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        )
        line += f"; never taught: {shown}"
    return line


def fallback_model() -> str:
    """The first shipped model whose weights are present (FileNotFoundError if none is)."""
    for name in FALLBACK_MODELS:
        if local_weights(name) is not None:
            return name
    raise FileNotFoundError(
        f"{missing_weights_message(DEFAULT_MODEL)}; the shipped fallback model is missing too: "
        "reinstall ovseg"
    )


def weights_dir() -> Path:
    """Where zoo weights are kept: ``$OVSEG_WEIGHTS``, else ``~/.cache/ovseg/weights``."""
    return Path(os.environ.get("OVSEG_WEIGHTS") or Path.home() / ".cache" / "ovseg" / "weights")


def get_entry(name: str, *, zoo: dict[str, ZooEntry] | None = None) -> ZooEntry:
    """The entry of ``name`` in ``zoo`` (default: the ovseg models, :data:`MODEL_ZOO`; SAM's
    is ``ovseg.sam.zoo.SAM_ZOO``); '-' and '_' are the same ('synthetic-tiny')."""
    zoo = MODEL_ZOO if zoo is None else zoo
    key = name.replace("-", "_")
    if key not in zoo:
        raise KeyError(f"unknown model '{name}': choose one of {', '.join(zoo)}")
    return zoo[key]


def local_weights(name: str, *, zoo: dict[str, ZooEntry] | None = None) -> Path | None:
    """The weights file of a zoo model if it is on this machine, else None."""
    entry = get_entry(name, zoo=zoo)
    candidates = [weights_dir() / entry.filename]
    if entry.shipped_path:
        candidates.append(ASSETS_DIR / entry.shipped_path)
    return next((p for p in candidates if p.is_file()), None)


GOOGLE_DRIVE_HOSTS = {"drive.google.com", "drive.usercontent.google.com", "docs.google.com"}


class DownloadError(ValueError):
    """A download that did not give the checkpoint; the message says what came back instead
    and how to fetch the file by hand. Nothing of the answer is kept."""


def browser_page(url: str) -> str:
    """The page a person opens to fetch ``url`` by hand: a Google Drive file's view page
    (``https://drive.google.com/file/d/<id>/view``), else ``url`` itself."""
    parts = urlsplit(url)
    if parts.hostname in GOOGLE_DRIVE_HOSTS:
        in_path = re.search(r"/file/d/([\w-]+)", parts.path)
        file_id = in_path.group(1) if in_path else parse_qs(parts.query).get("id", [""])[0]
        if file_id:
            return f"https://drive.google.com/file/d/{file_id}/view"
    return url


def manual_fetch_steps(name: str, *, zoo: dict[str, ZooEntry] | None = None) -> str:
    """How to put a zoo model's weights in place by hand (the one wording used by
    :func:`missing_weights_message` and every :class:`DownloadError`)."""
    entry = get_entry(name, zoo=zoo)
    where = weights_dir() / entry.filename
    fetch = f"open {browser_page(entry.url)} in a browser, download " if entry.url else "download "
    return (
        f"{fetch}{entry.filename} and put it at {where} "
        f"(or set OVSEG_WEIGHTS to the folder that holds it, or pass {entry.weights_flag} FILE)"
    )


def missing_weights_message(name: str, *, zoo: dict[str, ZooEntry] | None = None) -> str:
    """Why a zoo model cannot be loaded here and how to get its weights."""
    return f"no weights for model '{name}': {manual_fetch_steps(name, zoo=zoo)}"


def is_checkpoint_start(head: bytes) -> bool:
    """Whether bytes can begin a weights file: a torch zip ("PK\\x03\\x04"), a legacy torch
    pickle ("\\x80", the pickle protocol opcode) or safetensors (8-byte little-endian header
    length, then the JSON header's "{")."""
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return True
    header_length = int.from_bytes(head[:8], "little")
    # safetensors caps its header at 100 MB; an HTML page's first 8 bytes read as far more
    return len(head) > 8 and head[8:9] == b"{" and 0 < header_length <= 100_000_000


def _source_of(url: str) -> str:
    host = urlsplit(url).hostname
    return "Google Drive" if host in GOOGLE_DRIVE_HOSTS else host or url


def _not_a_checkpoint(head: bytes, content_type: str, source: str) -> str | None:
    """What came back instead of a checkpoint, or None if ``head`` can begin one."""
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:64].lower()
    if content_type == "text/html" or start.startswith((b"<!doctype html", b"<html")):
        why = (
            " (a virus-scan confirmation for large files, or a download-quota notice)"
            if source == "Google Drive"
            else ""
        )
        return f"{source} answered with an HTML page{why}, not the checkpoint"
    if content_type.startswith("text/"):
        return f"{source} answered with text ({content_type}), not the checkpoint"
    if not head:
        return f"{source} answered with an empty body, not the checkpoint"
    if not is_checkpoint_start(head):
        return (
            f"{source} answered with bytes that begin {head[:16]!r}: not a PyTorch or "
            "safetensors checkpoint"
        )
    return None


def _network_problem(error: Exception, url: str) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"{_source_of(url)} answered HTTP {error.code} {error.reason}"
    if isinstance(error, http.client.IncompleteRead):
        return "the connection closed before the end of the file (truncated)"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"{_source_of(url)} did not answer in time"
    return f"could not reach {_source_of(url)} ({reason})"


def _stream_to_file(tmp: str, first: bytes, read_block, *, total: int, label: str | None):
    """Write ``first`` and every further ``read_block()`` to ``tmp`` (until an empty block),
    with a progress bar named ``label`` (None: no bar). Returns (bytes written, sha256 hex)."""
    from tqdm import tqdm

    digest, received, block = hashlib.sha256(), 0, first
    with (
        open(tmp, "wb") as out,
        tqdm(
            total=total or None,
            unit="B",
            unit_scale=True,
            disable=label is None,
            desc=label,
            file=sys.stderr,
        ) as bar,
    ):
        while block:
            out.write(block)
            digest.update(block)
            received += len(block)
            bar.update(len(block))
            block = read_block()
    return received, digest.hexdigest()


def _received_problem(entry: ZooEntry, announced: int, received: int, sha256: str) -> str | None:
    """What is wrong with a finished download, or None."""
    # http.client ends a short body quietly: compare with what the server announced.
    if announced and received != announced:
        return f"the download stopped after {received} of {announced} bytes (truncated)"
    if entry.size is not None and received != entry.size:
        return f"{received} bytes came back, but {entry.filename} has {entry.size}"
    if entry.sha256 and sha256 != entry.sha256:
        return f"checksum mismatch for {entry.filename}: sha256 {sha256}, expected {entry.sha256}"
    return None


def download_weights(
    name: str, *, progress: bool = True, zoo: dict[str, ZooEntry] | None = None
) -> Path:
    """Download a zoo model's official weights into the weights directory (atomic).

    Returns the weights file (the one already here, if any). Raises ``FileNotFoundError`` for a
    model with no download, and :class:`DownloadError` (a ``ValueError``), keeping nothing, when
    the network fails or the answer is not the checkpoint: an HTML or other text page, a body
    that does not begin like a torch or safetensors file, fewer bytes than its Content-Length
    (truncated), a size other than the recorded one, or a failed sha256.
    """
    entry = get_entry(name, zoo=zoo)
    existing = local_weights(name, zoo=zoo)
    if existing is not None:
        return existing
    if entry.url is None:
        raise FileNotFoundError(missing_weights_message(name, zoo=zoo))
    target = weights_dir() / entry.filename
    source = _source_of(entry.url)

    def refuse(problem: str) -> DownloadError:
        return DownloadError(
            f"could not download the weights of model '{name}': {problem}; nothing was kept. "
            f"To fetch the file by hand: {manual_fetch_steps(name, zoo=zoo)}"
        )

    def read(response, size: int) -> bytes:
        try:
            return response.read(size)
        except (OSError, http.client.HTTPException) as error:
            raise refuse(_network_problem(error, entry.url)) from error

    def fetch(tmp: str) -> None:
        try:
            response = urllib.request.urlopen(entry.url, timeout=60)
        except (OSError, http.client.HTTPException) as error:
            raise refuse(_network_problem(error, entry.url)) from error
        with response:
            # urllib invents a Content-Type for file:// URLs (text/plain); only HTTP's counts
            from_http = urlsplit(response.geturl()).scheme in ("http", "https")
            content_type = response.headers.get("Content-Type", "") if from_http else ""
            content_type = content_type.split(";")[0].strip().lower()
            length = response.headers.get("Content-Length", "").strip()
            announced = int(length) if length.isdigit() else 0  # 0: not announced
            if entry.size is not None and announced and announced != entry.size:
                raise refuse(
                    f"{source} announced {announced} bytes, but {entry.filename} has {entry.size}"
                )
            # Judge the first block before writing anything.
            block = read(response, 1 << 20)
            problem = _not_a_checkpoint(block, content_type, source)
            if problem:
                raise refuse(problem)
            received, sha256 = _stream_to_file(
                tmp,
                block,
                lambda: read(response, 1 << 20),
                total=announced,
                label=entry.filename if progress else None,
            )
        problem = _received_problem(entry, announced, received, sha256)
        if problem:
            raise refuse(problem)

    atomic_write(target, fetch)
    return target
