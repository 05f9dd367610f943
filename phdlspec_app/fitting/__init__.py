"""Label inference: preprocessing, CMA-ES, MCMC, per-element diagnostics, batches.

May import ``emulator``, ``physics``, ``io``, ``labels`` and ``paths``.
"""
