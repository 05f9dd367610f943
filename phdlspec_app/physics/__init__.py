"""Ab initio 1D LTE spectral synthesis and differential spectra (the physical prior).

Modules are named after the steps of a synthesis (atmosphere, abundances, eos,
continuum absorption, line absorption, radiative transfer, synthesize). This
package may import ``phdlspec_app.io``, ``labels`` and ``paths`` only.
"""
