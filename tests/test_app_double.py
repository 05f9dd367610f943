"""A test double of the emulator's API, for the dashboard's tests and benchmark.

It is NOT physics: a few hundred Gaussian absorption lines on the LAMOST grid whose depths
depend smoothly on the labels, so that every label (and every element) visibly changes the
spectrum in its own pixels. It implements exactly the API the app uses from
``phdlspec_app.emulator.load_emulator()``: ``wavelength``, ``label_names``, ``__call__``,
``jacobian``, ``in_domain`` and ``domain_violations``.

The tests at the bottom check the double itself (shapes, jacobian against finite differences).
"""
from __future__ import annotations

import numpy as np

from phdlspec_app import labels as L
from phdlspec_app.physics.lsf import lamost_wavelength

__all__ = ["EmulatorDouble", "DOMAIN"]

#: The double's "training domain" (a box, narrower than the schema's physical range).
DOMAIN = {"teff": (4000.0, 7000.0), "logg": (1.0, 5.0), "vmic": (0.5, 2.5), "vbroad": (0.0, 50.0),
          "rv": (-300.0, 300.0), "fe_h": (-2.5, 0.5)}
_ABUND_DOMAIN = (-0.5, 1.0)
_C = 299792.458


class EmulatorDouble:
    """Fake emulator: ``EmulatorDouble()(labels)`` -> normalized flux on the LAMOST grid."""

    def __init__(self, seed: int = 7, lines_per_element: int = 8):
        self.wavelength = lamost_wavelength()
        self.label_names = L.label_names()
        rng = np.random.default_rng(seed)
        lo, hi = self.wavelength[0] + 20, self.wavelength[-1] - 20
        self._centers, self._owner, self._strength = [], [], []
        for lab in L.abundance_labels():
            n = 3 * lines_per_element if lab.name == "fe_h" else lines_per_element
            self._centers.append(rng.uniform(lo, hi, n))
            self._owner.append(np.full(n, lab.index))
            self._strength.append(rng.uniform(0.05, 0.4, n))
        self._centers = np.concatenate(self._centers)
        self._owner = np.concatenate(self._owner)
        self._strength = np.concatenate(self._strength)
        # Two strong features like the Balmer lines, sensitive to teff.
        self._balmer = np.array([4341.7, 4862.7, 6564.6])
        self.calls = 0

    # ---- API of phdlspec_app.emulator ------------------------------------------------
    def __call__(self, labels):
        lab = np.asarray(labels, dtype=float)
        single = lab.ndim == 1
        lab = np.atleast_2d(lab)
        self.calls += 1
        out = np.stack([self._one(row) for row in lab])
        return out[0] if single else out

    def jacobian(self, labels, eps: float | None = None):
        lab = np.atleast_2d(np.asarray(labels, dtype=float))
        steps = np.array([1.0 if n == "teff" else 0.01 for n in self.label_names])
        jac = np.empty((lab.shape[0], lab.shape[1], self.wavelength.size))
        for i in range(lab.shape[1]):
            up, dn = lab.copy(), lab.copy()
            up[:, i] += steps[i]
            dn[:, i] -= steps[i]
            jac[:, i] = (self(up) - self(dn)) / (2 * steps[i])
        return jac

    def domain_violations(self, labels):
        lab = np.atleast_2d(np.asarray(labels, dtype=float))
        out = []
        for row in lab:
            bad = []
            for name, value in zip(self.label_names, row):
                lo, hi = DOMAIN.get(name, _ABUND_DOMAIN)
                if not lo <= value <= hi:
                    bad.append(name)
            out.append(bad)
        return out

    def in_domain(self, labels):
        return np.array([not bad for bad in self.domain_violations(labels)])

    # ---- the fake spectrum ---------------------------------------------------------------
    def _one(self, row):
        teff, logg, vmic, vbroad, rv, feh = row[:6]
        abund = np.where(self._owner == 5, feh, feh + row[self._owner])
        depth = self._strength * (1 / (1 + np.exp(-(abund + 1.0) * 1.5))) * (5777.0 / teff) ** 2
        depth *= 1 + 0.05 * (vmic - 1.0) + 0.02 * (4.44 - logg)
        depth = np.clip(depth, 0, 0.95)
        shift = 1 + rv / _C
        sigma_kms = np.hypot(_C / 1800 / 2.355, vbroad / 2.355)
        wl = self.wavelength
        centers = self._centers * shift
        # The grid is uniform in log10(lambda): a line spans a fixed number of pixels.
        dlog = np.log10(wl[1] / wl[0])
        sigma_px = sigma_kms / _C / np.log(10) / dlog
        k = int(np.ceil(6 * sigma_px)) + 1
        pos = (np.log10(centers) - np.log10(wl[0])) / dlog
        idx = np.round(pos).astype(int)[:, None] + np.arange(-k, k + 1)[None, :]
        ok = (idx >= 0) & (idx < wl.size)
        idx = np.clip(idx, 0, wl.size - 1)
        prof = np.where(ok, np.exp(-0.5 * ((idx - pos[:, None]) / sigma_px) ** 2), 0.0)
        logf = np.zeros_like(wl)
        np.add.at(logf, idx, np.log1p(-depth[:, None] * prof))
        flux = np.exp(logf)
        hdepth = 0.5 * np.exp(-((teff - 7500) / 2500) ** 2)
        for c in self._balmer * shift:
            flux *= 1 - hdepth * np.exp(-0.5 * ((wl - c) / (8.0 + 0.5 * logg)) ** 2)
        return flux


# ---- tests of the double itself ---------------------------------------------------------
def test_double_shapes_and_domain():
    emu = EmulatorDouble()
    vec = L.defaults()
    assert emu(vec).shape == (3909,)
    assert emu(np.stack([vec, vec])).shape == (2, 3909)
    assert emu.jacobian(vec).shape == (1, 32, 3909)
    assert emu.in_domain(vec).tolist() == [True]
    bad = vec.copy()
    bad[0] = 3600
    assert emu.domain_violations(bad) == [["teff"]]


def test_double_elements_change_their_own_pixels():
    emu = EmulatorDouble()
    jac = emu.jacobian(L.defaults())[0]
    mg = L.get_label("mg_fe").index
    assert np.abs(jac[mg]).max() > 0.01
    assert (np.abs(jac[mg]) > 1e-3).mean() < 0.2  # localized, like an element's lines
