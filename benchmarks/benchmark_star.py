"""The benchmark star of the fit benchmarks (``bench_fit.py``, ``bench_likelihood.py`` and the
MCMC timings in BENCHMARKS.md): a 5200 K subgiant, log g 3.9, [Fe/H] −0.4, [Mg/Fe] +0.2,
rv 37 km/s, the other labels at the schema's defaults, made by the emulator itself with
Gaussian noise at a flat S/N per pixel. One recipe, so that every figure quoted for "the
benchmark star" is for the same spectrum and the same noise draw.
"""
from __future__ import annotations

import numpy as np

from phdlspec_app import labels as L
from phdlspec_app.io import Spectrum

__all__ = ["TRUTH", "benchmark_star"]

#: the star's labels, {name: value} in schema units (K, dex, km/s)
TRUTH = {"teff": 5200, "logg": 3.9, "fe_h": -0.4, "rv": 37.0, "mg_fe": 0.2}


def benchmark_star(emu, snr: float = 50.0, rng: np.random.Generator | None = None) -> tuple[np.ndarray, Spectrum]:
    """((32,) true labels, the noisy :class:`Spectrum` on the emulator's grid). ``rng``
    (default ``default_rng(0)``, the recorded draw) makes the noise; it is advanced, so a
    caller may go on drawing from it."""
    rng = np.random.default_rng(0) if rng is None else rng
    truth = L.to_vector(TRUTH)
    f = np.asarray(emu(truth))
    obs = f + rng.normal(0, 1 / snr, f.size)
    return truth, Spectrum(emu.wavelength, obs, np.full(f.size, snr**2), np.zeros(f.size, bool),
                           meta={"source": "bench"})
