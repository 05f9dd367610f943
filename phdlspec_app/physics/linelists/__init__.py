"""Line-list readers and the :class:`LineList` container (units in ``core.py``).

One module per format: ``moog`` (linemake/MOOG), ``turbospectrum`` (Gaia-ESO v6),
``vald`` (VALD3 long/short), ``kurucz`` (Kurucz molecular ASCII); ``default`` combines
and caches the list the synthesis uses; ``species`` decodes species codes and isotopes.
"""
from .core import LineList
from .default import (DEFAULT_MOLECULES, READER_VERSION, build_default_linelist, cache_dir,
                      load_default_linelist)
from .kurucz import read_kurucz_molecules
from .moog import linemake_dir, read_linemake, read_moog
from .turbospectrum import read_ges_turbospectrum, read_turbospectrum
from .vald import read_vald

__all__ = ["LineList", "read_linemake", "read_moog", "linemake_dir", "read_ges_turbospectrum",
           "read_turbospectrum", "read_vald", "read_kurucz_molecules", "load_default_linelist",
           "build_default_linelist", "cache_dir", "DEFAULT_MOLECULES", "READER_VERSION"]
