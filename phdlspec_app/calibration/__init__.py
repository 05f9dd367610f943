"""Calibration of fitted labels: wide binaries, open clusters, reference catalogs.

May import every layer below it; never ``app``. One module per step:

* :mod:`.tables` — read results and catalogs (FITS, ECSV, CSV, Parquet) with schema
  column names, cross-match by identifier or sky position, write atomically;
* :mod:`.models` — polynomial trends, robust (Huber, clipped) and bootstrap fits, k-fold CV;
* :mod:`.binaries`, :mod:`.cluster`, :mod:`.reference` — the three methods;
* :mod:`.correction`, :mod:`.calibration` — one label's correction, and the
  :class:`Calibration` that applies them all and is saved as one versioned file;
* :mod:`.diagnostics` — residuals before/after, summary, plots;
* :mod:`.catalogs` — loaders for the shared OCCAM, GALAH and Gaia benchmark catalogs.

Example::

    from phdlspec_app.calibration import Calibration, build_calibration, read_table
    results = read_table("results.ecsv")
    cal = build_calibration(results, pairs=read_table("pairs.ecsv"))
    cal.save("calibration.ecsv")
    calibrated = Calibration.load("calibration.ecsv").apply(results)
"""
from .calibration import Calibration, build_calibration
from .tables import CalibrationInputError, crossmatch, read_table, write_table

__all__ = ["Calibration", "build_calibration", "CalibrationInputError", "crossmatch", "read_table", "write_table"]
