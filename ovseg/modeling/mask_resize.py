"""Mask logits to the output size in one compiled CPU pass (numba): the official two bilinear
resizes (up to the padded input, crop, down to the original image; detectron2's
``sem_seg_postprocess`` after Mask2Former's upsampling) folded into one separable filter.

Bilinear resizing is linear and separable, so both steps, and the crop between them, are per
axis one matrix: rows of the output from rows of the mask (a few taps each, since each step
has two), columns likewise. The matrices are made by running ``F.interpolate`` on an identity
(each step's weights exactly torch's, align_corners=False, the scale from the sizes; their
product in float64); the pass then reads each low-resolution mask once and writes the output once,
without the (queries, padded H, padded W) maps in between. 250 queries from 160 x 216 to a
640 x 864 input and a 480 x 640 output, 2 threads on a Zen 4 EPYC: 0.06-0.10 s against
0.48-0.66 s for the two resizes and the crop's copy, interleaved. Same values to float rounding
(~1e-7 relative, tested against the two resizes); CPU float32 inference only: gradients,
other devices, tracing and export keep the two ``F.interpolate`` calls.
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
import torch
import torch.nn.functional as F

from ovseg.modeling.cpu_inference import cpu_inference_applies, numba_threads_as_torch


@lru_cache(maxsize=32)
def composite_taps(
    length: int, padded: int, resized: int, output: int
) -> tuple[np.ndarray, np.ndarray]:
    """One axis of the two resizes as a banded matrix: a mask axis of ``length`` samples
    upsampled to ``padded``, cropped to its first ``resized``, resized to ``output``
    (bilinear, align_corners=False, as ``F.interpolate`` with a size).

    Returns:
        first (output,) int64: the first mask sample each output sample reads;
        weights (output, taps) float32: the weights of samples first .. first + taps - 1
        (zero-padded; first + taps <= length).
    Raises ValueError for sizes below 1 or ``resized`` above ``padded``.
    """
    if min(length, padded, resized, output) < 1 or resized > padded:
        raise ValueError(
            f"bad resize sizes: {length} -> {padded}, crop {resized}, -> {output} (need all "
            "at least 1 and the crop within the padded size)"
        )
    up = _step(length, padded)[:resized]  # (resized, length)
    matrix = (_step(resized, output).double() @ up.double()).numpy()  # (output, length)
    nonzero = matrix != 0.0
    first = np.where(nonzero.any(1), nonzero.argmax(1), 0)
    last = np.where(nonzero.any(1), length - 1 - nonzero[:, ::-1].argmax(1), 0)
    taps = int((last - first).max()) + 1
    first = np.minimum(first, length - taps)
    columns = first[:, None] + np.arange(taps)[None]
    weights = np.take_along_axis(matrix, columns, axis=1)
    assert np.allclose(weights.sum(1), matrix.sum(1))  # every nonzero inside the band
    return first.astype(np.int64), weights.astype(np.float32)


def _step(length: int, output: int) -> torch.Tensor:
    """(output, length) float32: one bilinear step along an axis, with exactly the weights
    ``F.interpolate`` computes for float32 maps (its sampling positions are float32: made in
    float64 they differ by up to ~1e-5 of a sample on a thousand-pixel axis)."""
    basis = torch.eye(length, dtype=torch.float32)[None]  # (1, samples, length)
    return F.interpolate(basis, size=output, mode="linear", align_corners=False)[0].T


def _compiled_taps(low: torch.Tensor, padded_hw, resized_hw, out_hw) -> tuple | None:
    """Both axes' :func:`composite_taps` (y_first, y_weights, x_first, x_weights) where the
    compiled pass applies to ``low`` (CPU float32 inference), else None."""
    if not cpu_inference_applies(low) or low.dtype != torch.float32:
        return None
    return (
        *composite_taps(low.shape[1], padded_hw[0], resized_hw[0], out_hw[0]),
        *composite_taps(low.shape[2], padded_hw[1], resized_hw[1], out_hw[1]),
    )


@numba.njit(parallel=True, cache=True, nogil=True)
def _resize(low, y_first, y_weights, x_first, x_weights, out):
    """low (Q, h, w) float32 -> out (Q, H, W): columns first into a (h, W) buffer per query,
    then rows, each output row a weighted sum of a few buffer rows (contiguous, vectorised)."""
    queries, rows = low.shape[0], low.shape[1]
    out_rows, y_taps = y_weights.shape
    out_cols, x_taps = x_weights.shape
    for q in numba.prange(queries):
        across = np.empty((rows, out_cols), np.float32)
        for r in range(rows):
            line = low[q, r]
            for x in range(out_cols):
                first = x_first[x]
                total = np.float32(0.0)
                for t in range(x_taps):
                    total += x_weights[x, t] * line[first + t]
                across[r, x] = total
        for y in range(out_rows):
            target = out[q, y]
            first = y_first[y]
            weight = y_weights[y, 0]
            source = across[first]
            for x in range(out_cols):
                target[x] = weight * source[x]
            for t in range(1, y_taps):
                weight = y_weights[y, t]
                source = across[first + t]
                for x in range(out_cols):
                    target[x] += weight * source[x]


def resize_masks(
    low: torch.Tensor,
    padded_hw: tuple[int, int],
    resized_hw: tuple[int, int],
    out_hw: tuple[int, int],
    *,
    chunk: int = 16,
) -> torch.Tensor:
    """Mask logits (Q, h, w) -> (Q, *out_hw): bilinearly up to ``padded_hw``, cropped to
    ``resized_hw``, bilinearly to ``out_hw`` (Mask2Former / FC-CLIP's inference), in one
    compiled pass on CPU float32 inference (see the module docstring), else by
    ``F.interpolate`` twice, ``chunk`` queries at a time. Values: the two resizes' to ~1e-7
    relative (a logit within that of 0 may change sign)."""
    taps = _compiled_taps(low, padded_hw, resized_hw, out_hw)
    if taps is None:
        out = low.new_empty((low.shape[0], *out_hw))
        for start in range(0, low.shape[0], chunk):  # the padded maps never exist for all
            up = F.interpolate(
                low[None, start : start + chunk],
                size=tuple(padded_hw),
                mode="bilinear",
                align_corners=False,
            )
            cropped = up[..., : resized_hw[0], : resized_hw[1]]
            out[start : start + chunk] = F.interpolate(
                cropped, size=tuple(out_hw), mode="bilinear", align_corners=False
            )[0]
        return out
    return _compiled_resize(low, taps, out_hw)


def _compiled_resize(low: torch.Tensor, taps: tuple, out_hw) -> torch.Tensor:
    """(Q, h, w) -> (Q, *out_hw) in the compiled pass, with :func:`_compiled_taps`' taps."""
    out = np.empty((low.shape[0], *out_hw), np.float32)
    with numba_threads_as_torch():
        _resize(low.detach().contiguous().numpy(), *taps, out)
    return torch.from_numpy(out)


def resize_bilinear(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(logits, size, mode="bilinear", align_corners=False)`` for (B, Q, h, w)
    maps -> (B, Q, *size), in the compiled pass on CPU float32 inference. With many maps
    (FC-CLIP's 250 mask logits shrunk to the CLIP feature size for mask pooling)
    ``F.interpolate`` first copies them all into a channels-last layout: 14 of its 17 ms at
    160 x 216 -> 20 x 27 here; the pass reads each map once (~1 ms). The same values to float
    rounding (~1e-7 relative)."""
    batch, maps, height, width = logits.shape
    flat = logits.reshape(batch * maps, height, width)
    taps = _compiled_taps(flat, size, size, size)
    if taps is None:
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return _compiled_resize(flat, taps, size).view(batch, maps, *size)


def semantic_scores(
    class_logits: torch.Tensor,
    low: torch.Tensor,
    padded_hw: tuple[int, int],
    resized_hw: tuple[int, int],
    out_hw: tuple[int, int],
    *,
    block_values: int = 1 << 21,
) -> torch.Tensor | None:
    """Mask2Former's semantic scores (:func:`ovseg.modeling.postprocess.semantic_inference`)
    of the masks :func:`resize_masks` gives, (Q, K+1), (Q, h, w) -> (K, *out_hw), made a band
    of output rows at a time: each band's mask logits (about ``block_values`` values) are
    resized, turned into probabilities and multiplied with the class probabilities in cache,
    so the (Q, H, W) output-size masks never exist (on a photo they are hundreds of MB of
    fresh pages, whose first touch after the network cost more than the resize itself).
    None where the compiled pass does not apply (see :func:`resize_masks`): the caller
    resizes the masks the usual way. The same sums to float rounding."""
    taps = _compiled_taps(low, padded_hw, resized_hw, out_hw)
    if taps is None or not cpu_inference_applies(class_logits):
        return None
    y_first, y_weights, x_first, x_weights = taps
    queries = low.shape[0]
    probs = torch.softmax(class_logits.float(), dim=-1)[..., :-1].T.contiguous()  # (K, Q)
    scores = torch.empty((probs.shape[0], out_hw[0] * out_hw[1]), dtype=torch.float32)
    rows = max(1, block_values // max(1, queries * out_hw[1]))
    y_taps = y_weights.shape[1]
    masks = low.detach().contiguous().numpy()
    band = np.empty((queries, rows, out_hw[1]), np.float32)
    with numba_threads_as_torch():
        for y0 in range(0, out_hw[0], rows):
            y1 = min(y0 + rows, out_hw[0])
            r0, r1 = int(y_first[y0]), int(y_first[y1 - 1]) + y_taps  # the mask rows they read
            out = band if y1 - y0 == rows else np.empty((queries, y1 - y0, out_hw[1]), np.float32)
            _resize(
                np.ascontiguousarray(masks[:, r0:r1]),
                y_first[y0:y1] - r0,
                y_weights[y0:y1],
                x_first,
                x_weights,
                out,
            )
            probabilities = torch.from_numpy(out).view(queries, -1).sigmoid_()
            torch.mm(probs, probabilities, out=scores[:, y0 * out_hw[1] : y1 * out_hw[1]])
    return scores.view(probs.shape[0], *out_hw)
