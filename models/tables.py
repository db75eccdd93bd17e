"""Integer probability tables for entropy coding, built once at export and shipped with weights.

Tables are computed in float64 when a model is exported and stored as integer frequencies in
the weights file; decoding never recomputes them, so a decoder's floating-point library cannot
change them. Each table covers symbols ``-L..L`` plus one escape symbol; an escaped value is
coded afterwards with a uniform 16-bit model.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_erfc = np.frompyfunc(math.erfc, 1, 1)


def ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF in float64 (export time only; decoders read the stored tables)."""
    return np.asarray(0.5 * _erfc(-np.asarray(x, np.float64) / math.sqrt(2)), dtype=np.float64)


PRECISION = 16  # frequencies of each table sum to 2**PRECISION
ESCAPE_RANGE = 1 << 16  # escaped values v must satisfy |v| < 2**15
MAX_HALF_WIDTH = 1024
TAIL = 1e-9


def quantize_pmf(pmf: np.ndarray, tail: float) -> np.ndarray:
    """Float pmf over n symbols + tail mass -> n + 1 integer frequencies summing to 2**PRECISION.

    Every symbol keeps a frequency of at least 1, so anything can be coded.
    """
    probs = np.append(pmf, tail)
    total = 1 << PRECISION
    n = len(probs)
    freqs = np.maximum(1, np.floor(probs / probs.sum() * (total - n)).astype(np.int64) + 1)
    # Deterministic repair of the sum: adjust the most probable symbol.
    freqs[int(np.argmax(freqs))] += total - int(freqs.sum())
    if freqs.min() < 1:
        raise ValueError("pmf too concentrated to quantize")
    return freqs


def gaussian_tables(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each scale: half-width L and frequencies of -L..L + escape (padded, int32)."""
    halves, rows = [], []
    for s in scales:
        half = int(min(MAX_HALF_WIDTH, max(1, math.ceil(s * 6.5))))
        k = np.arange(-half, half + 1, dtype=np.float64)
        pmf = ndtr((k + 0.5) / s) - ndtr((k - 0.5) / s)
        tail = 2 * ndtr(-(half + 0.5) / s)
        halves.append(half)
        rows.append(quantize_pmf(pmf, max(tail, TAIL)))
    width = max(len(r) for r in rows)
    table = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return np.array(halves, np.int32), table


def density_tables(cdf_fn, channels: int, max_half: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Tables for a learned per-channel density given ``cdf_fn(points) -> (C, n)``.

    The half-width L of each channel is the smallest that leaves at most TAIL of its mass
    below -L-0.5 and above L+0.5, capped at ``max_half``; what lies outside is escaped.
    """
    k = np.arange(-max_half, max_half + 1, dtype=np.float64)
    upper = cdf_fn(k + 0.5)  # (C, n): mass below k + 0.5
    lower = cdf_fn(k - 0.5)  # (C, n): mass below k - 0.5
    pmf_all = np.clip(upper - lower, 0, None)
    halves, rows = [], []
    for c in range(channels):
        half = _half(lower[c], 1 - upper[c])
        sel = slice(max_half - half, max_half + half + 1)
        tail = float(lower[c, max_half - half] + 1 - upper[c, max_half + half])
        halves.append(half)
        rows.append(quantize_pmf(pmf_all[c, sel], max(tail, TAIL)))
    width = max(len(r) for r in rows)
    table = np.zeros((channels, width), np.int32)
    for i, r in enumerate(rows):
        table[i, : len(r)] = r
    return np.array(halves, np.int32), table


def _half(below: np.ndarray, above: np.ndarray) -> int:
    """Smallest L with the mass below -L-0.5 and above L+0.5 each at most TAIL."""
    mid = len(below) // 2
    for half in range(1, mid + 1):
        if below[mid - half] <= TAIL and above[mid + half] <= TAIL:
            return half
    return mid


def to_tensors(halves: np.ndarray, table: np.ndarray, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.halves": torch.from_numpy(halves), f"{prefix}.freqs": torch.from_numpy(table)}
