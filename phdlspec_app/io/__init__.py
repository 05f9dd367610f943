"""Spectrum input and output.

``read_spectrum(path)`` reads any LAMOST low-resolution layout (pilot/DR1 v2.6,
DR2-DR8 images, DR9+ COADD tables, gzipped or not), generic 1-D FITS with a
wavelength WCS, FITS spectrum tables, text/CSV columns, PhDLspec's own FITS and
ECSV files, and specutils spectra. ``write_spectrum(spec, path)`` writes FITS or
ECSV losslessly. Every reader returns vacuum wavelengths in Angstrom.
"""
from .airvac import air_to_vacuum, vacuum_to_air
from .native import read_model, write_model, write_spectrum
from .read import read_spectrum
from .specutils_bridge import from_specutils, to_specutils
from .spectrum import Spectrum, SpectrumFormatError

__all__ = ["read_spectrum", "write_spectrum", "write_model", "read_model", "Spectrum", "SpectrumFormatError",
           "air_to_vacuum", "vacuum_to_air", "to_specutils", "from_specutils"]
