"""Continuum opacity, one module per process (see :mod:`..continuum_absorption` for the sum).

- :mod:`.hminus`: H⁻ bound-free (McLaughlin et al. 2017) and free-free (Bell & Berrington 1987)
- :mod:`.hydrogen`: H I bound-free (Nahar 2021 + Hummer & Mihalas 1988 level dissolution,
  Kramers for n ≥ 7) and free-free (van Hoof et al. 2014 Gaunt factors)
- :mod:`.h2plus`: H₂⁺ bound-free and free-free (Stancil 1994)
- :mod:`.helium`: He⁻ free-free (John 1994)
- :mod:`.metals`: metal bound-free from the MARCS/Turbospectrum OP-based table
- :mod:`.scattering`: Rayleigh (Colgan et al. 2016; Dalgarno & Williams 1962) and Thomson
"""
from .h2plus import h2plus_bf_ff
from .helium import heminus_ff
from .hminus import hminus_bf, hminus_bf_cross_section, hminus_ff, hminus_number_density
from .hydrogen import gaunt_ff_vanhoof, hummer_mihalas_w, hydrogen_bf, hydrogen_ff
from .metals import METAL_BF_SPECIES, metal_bf, metal_bf_cross_sections, metal_bf_species
from .scattering import rayleigh_h, rayleigh_h2, rayleigh_he, thomson

__all__ = ["h2plus_bf_ff", "heminus_ff", "hminus_bf", "hminus_bf_cross_section", "hminus_ff",
           "hminus_number_density", "gaunt_ff_vanhoof", "hummer_mihalas_w", "hydrogen_bf",
           "hydrogen_ff", "METAL_BF_SPECIES", "metal_bf", "metal_bf_cross_sections", "metal_bf_species", "rayleigh_h",
           "rayleigh_h2", "rayleigh_he", "thomson"]
