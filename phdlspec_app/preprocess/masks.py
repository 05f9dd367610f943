"""Default user masks: wavelength ranges the fit leaves out because the model does not
describe them (telluric absorption, interstellar absorption, diffuse interstellar bands).

All ranges are **vacuum** wavelengths in Å (the model grid's medium); the air
wavelengths of the sources were converted with ``io.airvac.air_to_vacuum`` (≈ +1.7 Å
at 6000 Å), rounded outward to 0.5 Å. Each entry names its source.

Tellurics (strongest molecular bands in the LAMOST range; Hinkle, Wallace & Livingston
2003, *BAAS* 35, 1260 atlas; Smette et al. 2015, A&A 576, A77 — Molecfit):
    O2 B band 6868-6935 (air 6866-6933), H2O and O2 7167-7342 (air 7165-7340), O2 A band
    7596-7702 (air 7594-7700), H2O 8132-8352 (air 8130-8350) — the LAMOST pipeline does not correct these in the low-resolution spectra.
Interstellar lines (Morton 2003, ApJS 149, 205): Na I D2/D1 5891.6/5897.6 and
    K I 7667.0/7701.1 (vacuum) ± 3 Å (± ~150 km/s: the R = 1800 LSF plus ISM velocities).
    Stellar Na D and K I are blended with them in reddened stars; masking trades the
    stellar information for robustness. The stellar K I 7665/7699 also sit inside the
    O2 A band.
Diffuse interstellar bands (Hobbs et al. 2008, ApJ 680, 1256; air 5780.5, 5797.1,
    6283.8, 6613.6 Å = vacuum 5782.1, 5798.7, 6285.5, 6615.4 Å): ± 4 Å (the 6284 band is ~4 Å wide and sits on O2 gamma lines).
"""
from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_MASKS", "mask_groups", "user_mask"]

#: name → (group, vacuum Å start, vacuum Å end, source)
DEFAULT_MASKS: dict[str, tuple[str, float, float, str]] = {
    "O2 B band": ("telluric", 6868.0, 6935.0, "Hinkle et al. 2003; Smette et al. 2015"),
    "H2O/O2 7167-7342": ("telluric", 7167.0, 7342.0, "Hinkle et al. 2003; Smette et al. 2015"),
    "O2 A band": ("telluric", 7596.0, 7702.0, "Hinkle et al. 2003; Smette et al. 2015"),
    "H2O 8132-8352": ("telluric", 8132.0, 8352.0, "Hinkle et al. 2003; Smette et al. 2015"),
    "ISM Na D2": ("interstellar", 5888.5, 5894.5, "Morton 2003 (vacuum 5891.58)"),
    "ISM Na D1": ("interstellar", 5894.5, 5900.5, "Morton 2003 (vacuum 5897.56)"),
    "ISM K I 7667": ("interstellar", 7664.0, 7670.0, "Morton 2003 (vacuum 7667.02)"),
    "ISM K I 7701": ("interstellar", 7698.0, 7704.0, "Morton 2003 (vacuum 7701.08)"),
    "DIB 5780": ("dib", 5778.0, 5786.0, "Hobbs et al. 2008 (air 5780.5)"),
    "DIB 5797": ("dib", 5794.5, 5803.0, "Hobbs et al. 2008 (air 5797.1)"),
    "DIB 6284": ("dib", 6281.5, 6289.5, "Hobbs et al. 2008 (air 6283.8)"),
    "DIB 6614": ("dib", 6611.5, 6619.5, "Hobbs et al. 2008 (air 6613.6)"),
}


def mask_groups() -> list[str]:
    """The groups of :data:`DEFAULT_MASKS` (``telluric``, ``interstellar``, ``dib``)."""
    return sorted({g for g, *_ in DEFAULT_MASKS.values()})


def user_mask(wavelength: np.ndarray, groups="all", extra: list[tuple[float, float]] | None = None) -> np.ndarray:
    """Boolean array, True where ``wavelength`` (vacuum Å) falls in a masked range.

    ``groups``: ``"all"``, ``"none"``/None, or an iterable of group names from
    :func:`mask_groups`; ``extra``: more (start, end) ranges in vacuum Å.
    """
    wl = np.asarray(wavelength, dtype=float)
    out = np.zeros(wl.shape, dtype=bool)
    if groups in (None, "none"):
        chosen = set()
    elif groups == "all":
        chosen = set(mask_groups())
    else:
        chosen = set(groups)
        unknown = chosen - set(mask_groups())
        if unknown:
            raise ValueError(f"unknown mask groups {sorted(unknown)}; known: {mask_groups()}")
    for group, lo, hi, _ in DEFAULT_MASKS.values():
        if group in chosen:
            out |= (wl >= lo) & (wl <= hi)
    for lo, hi in extra or []:
        out |= (wl >= lo) & (wl <= hi)
    return out
