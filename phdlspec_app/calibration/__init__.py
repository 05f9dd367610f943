"""Calibration of fitted labels: wide binaries, open clusters, reference catalogs.

May import every layer below it; never ``app``.
"""
