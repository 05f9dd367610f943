"""Fast reading of fixed-width numeric text tables (line lists of millions of lines)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

__all__ = ["read_lines", "fixed_width_block", "column_float", "column_str"]


def read_lines(path) -> list[bytes]:
    """The file's lines as bytes (``.gz`` decompressed), without line ends."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    return data.replace(b"\r\n", b"\n").split(b"\n")


def fixed_width_block(lines: list[bytes], width: int) -> np.ndarray:
    """A (N, width) uint8 array of the lines, blank-padded/truncated to ``width``."""
    arr = np.array(lines, dtype=f"S{width}")  # truncates longer lines, pads with NUL
    block = arr.view(np.uint8).reshape(len(lines), width).copy()
    block[block == 0] = ord(" ")
    return block


def column_str(block: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Columns [start, stop) (0-based) of every row as bytes strings (stripped)."""
    sub = np.ascontiguousarray(block[:, start:stop])
    return np.char.strip(sub.view(f"S{stop - start}").ravel())


def column_float(block: np.ndarray, start: int, stop: int, blank=np.nan) -> np.ndarray:
    """Columns [start, stop) parsed as float64; blank fields become ``blank``."""
    sub = np.ascontiguousarray(block[:, start:stop])
    is_blank = (sub == ord(" ")).all(axis=1)
    raw = sub.view(f"S{stop - start}").ravel().copy()
    raw[is_blank] = b"nan"
    out = raw.astype(np.float64)
    out[is_blank] = blank
    return out
