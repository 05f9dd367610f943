"""Air <-> vacuum wavelength conversion.

One formula is used everywhere in PhDLspec: the refractive index of standard air
of Birch & Downs (1994, Metrologia 31, 315), in the form given by Morton (2000,
ApJS 130, 403, eq. 8) and used by VALD:

    s = 1e4 / lambda_vac   [micron^-1]
    n = 1 + 8.34254e-5 + 2.406147e-2 / (130 - s^2) + 1.5998e-4 / (38.9 - s^2)
    lambda_air = lambda_vac / n

Its inverse (vacuum from air) is the fit by N. Piskunov published with VALD:

    s = 1e4 / lambda_air
    n = 1 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s^2)
          + 1.599740894897e-4 / (38.92568793293 - s^2)
    lambda_vac = lambda_air * n

The two agree to better than 1e-4 Angstrom over 2000-25000 Angstrom (round trip
tested). Below 2000 Angstrom air and vacuum coincide by convention.
"""
from __future__ import annotations

import numpy as np

__all__ = ["air_to_vacuum", "vacuum_to_air"]

_MIN_AIR = 2000.0  # Angstrom; below this, wavelengths are vacuum by convention


def air_to_vacuum(wavelength_air):
    """Vacuum wavelength (Angstrom) from air wavelength (Angstrom)."""
    wl = np.asarray(wavelength_air, dtype=np.float64)
    s2 = (1e4 / wl) ** 2
    n = (1.0 + 8.336624212083e-5 + 2.408926869968e-2 / (130.1065924522 - s2)
         + 1.599740894897e-4 / (38.92568793293 - s2))
    return np.where(wl >= _MIN_AIR, wl * n, wl)


def vacuum_to_air(wavelength_vacuum):
    """Air wavelength (Angstrom) from vacuum wavelength (Angstrom)."""
    wl = np.asarray(wavelength_vacuum, dtype=np.float64)
    s2 = (1e4 / wl) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return np.where(wl >= _MIN_AIR, wl / n, wl)
