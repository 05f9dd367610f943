"""TEST DOUBLE of the emulator API, for the fitting tests. Not physics.

``LineDouble`` has exactly the emulator's interface (``wavelength``, ``label_names``,
``device``, ``resolution``, ``__call__``, ``jacobian``, ``in_domain``,
``domain_violations``) so that ``phdlspec_app.fitting`` can be developed and tested
before the trained emulator exists. Its spectrum is a flat continuum minus a
sum (lines add linearly, so that LSF convolutions commute exactly) of

- Gaussian absorption lines at ~110 real (air → vacuum) wavelengths of the schema's
  elements, whose equivalent width follows a saturating curve of growth of an optical
  depth that scales as 10^([X/H] + a_T (Teff-5777)/1000
  + a_g (log g - 4.44)) with per-line coefficients (neutral lines weaken with Teff,
  ionized lines strengthen towards low log g, molecular bands of C and N weaken
  steeply with Teff) and saturate; strong lines grow with vmic;
- broad Gaussian Balmer and Paschen lines whose widths grow with Teff;

each broadened to the LSF of R = 1800 plus ``vbroad`` (Gaussian FWHM in km/s) and
shifted by ``rv`` (km/s). Every element but Cu has lines; Cu has none, so the fitter
must flag [Cu/Fe] as unconstrained. Computed in torch; the Jacobian is by forward-mode
autodiff (torch.func.jacfwd).
"""
from __future__ import annotations

import numpy as np
import torch

from phdlspec_app import labels as L
from phdlspec_app.io.airvac import air_to_vacuum
from phdlspec_app.physics.constants import c_kms
from phdlspec_app.physics.grid import GridSpec, galactic_trend
from phdlspec_app.physics.lsf import lamost_wavelength

_NAMES = L.label_names()
_IDX = {n: i for i, n in enumerate(_NAMES)}

# (element label or special, air wavelength Å, log tau0, kind) with kind: I (neutral),
# II (ionized), M (molecular). log tau0 is the line's central optical depth at solar labels.
_LINES = [
    ("fe_h", 4045.81, 0.6, "I"), ("fe_h", 4271.76, 0.4, "I"), ("fe_h", 4383.55, 0.5, "I"),
    ("fe_h", 4404.75, 0.3, "I"), ("fe_h", 5269.54, 0.3, "I"), ("fe_h", 5328.04, 0.2, "I"),
    ("fe_h", 5371.49, 0.1, "I"), ("fe_h", 5397.13, 0.0, "I"), ("fe_h", 5405.77, 0.0, "I"),
    ("fe_h", 5429.70, 0.0, "I"), ("fe_h", 6191.56, -0.4, "I"), ("fe_h", 6252.56, -0.4, "I"),
    ("fe_h", 6393.60, -0.4, "I"), ("fe_h", 6494.98, -0.3, "I"), ("fe_h", 8688.62, -0.4, "I"),
    ("fe_h", 4923.93, -0.3, "II"), ("fe_h", 5018.44, -0.3, "II"), ("fe_h", 5316.62, -0.5, "II"),
    ("mg_fe", 5167.32, 0.3, "I"), ("mg_fe", 5172.68, 0.6, "I"), ("mg_fe", 5183.60, 0.7, "I"),
    ("mg_fe", 8806.76, -0.3, "I"), ("mg_fe", 4702.99, -0.5, "I"), ("mg_fe", 4571.10, -0.6, "I"),
    ("ca_fe", 4226.73, 0.8, "I"), ("ca_fe", 6122.22, -0.2, "I"), ("ca_fe", 6162.17, -0.1, "I"),
    ("ca_fe", 6439.08, -0.3, "I"), ("ca_fe", 6102.72, -0.5, "I"), ("ca_fe", 3933.66, 1.5, "II"),
    ("ca_fe", 3968.47, 1.4, "II"), ("ca_fe", 8498.02, 0.3, "II"), ("ca_fe", 8542.09, 0.7, "II"),
    ("ca_fe", 8662.14, 0.6, "II"),
    ("na_fe", 5889.95, 0.6, "I"), ("na_fe", 5895.92, 0.4, "I"), ("na_fe", 8183.26, -0.4, "I"),
    ("na_fe", 8194.82, -0.3, "I"),
    ("k_fe", 7664.90, -0.2, "I"), ("k_fe", 7698.96, -0.4, "I"),
    ("al_fe", 3944.01, 0.0, "I"), ("al_fe", 3961.52, 0.1, "I"), ("al_fe", 6696.02, -1.0, "I"),
    ("al_fe", 6698.67, -1.2, "I"),
    ("si_fe", 5708.40, -0.8, "I"), ("si_fe", 5772.15, -0.9, "I"), ("si_fe", 6155.13, -0.8, "I"),
    ("si_fe", 7034.90, -0.9, "I"), ("si_fe", 3905.52, 0.2, "I"),
    ("ti_fe", 4981.73, -0.2, "I"), ("ti_fe", 4991.07, -0.3, "I"), ("ti_fe", 5210.38, -0.4, "I"),
    ("ti_fe", 4443.80, -0.1, "II"), ("ti_fe", 4501.27, -0.2, "II"),
    ("cr_fe", 5206.04, -0.1, "I"), ("cr_fe", 5208.42, 0.0, "I"), ("cr_fe", 4254.35, 0.1, "I"),
    ("cr_fe", 4274.80, 0.0, "I"),
    ("mn_fe", 4030.75, 0.0, "I"), ("mn_fe", 4033.06, -0.1, "I"), ("mn_fe", 4034.48, -0.2, "I"),
    ("mn_fe", 6021.82, -0.8, "I"),
    ("co_fe", 4121.31, -0.6, "I"), ("co_fe", 3995.31, -0.5, "I"), ("co_fe", 4118.77, -0.7, "I"),
    ("ni_fe", 5476.90, -0.3, "I"), ("ni_fe", 5035.36, -0.6, "I"), ("ni_fe", 6767.77, -0.8, "I"),
    ("ni_fe", 3858.30, -0.2, "I"),
    ("sc_fe", 4246.82, -0.1, "II"), ("sc_fe", 5526.79, -0.7, "II"), ("sc_fe", 6604.60, -1.0, "II"),
    ("v_fe", 4379.23, -0.6, "I"), ("v_fe", 4389.97, -0.7, "I"), ("v_fe", 4111.78, -0.7, "I"),
    ("zn_fe", 4722.15, -0.8, "I"), ("zn_fe", 4810.53, -0.7, "I"),
    ("sr_fe", 4077.71, 0.2, "II"), ("sr_fe", 4215.52, 0.0, "II"),
    ("y_fe", 4883.68, -0.7, "II"), ("y_fe", 5087.42, -0.9, "II"), ("y_fe", 4900.12, -0.8, "II"),
    ("zr_fe", 4149.20, -0.9, "II"), ("zr_fe", 4208.98, -1.0, "II"),
    ("ba_fe", 4554.03, 0.1, "II"), ("ba_fe", 4934.08, 0.0, "II"), ("ba_fe", 5853.67, -0.5, "II"),
    ("ba_fe", 6141.71, -0.3, "II"), ("ba_fe", 6496.90, -0.4, "II"),
    ("la_fe", 4086.71, -1.0, "II"), ("la_fe", 3988.51, -1.0, "II"),
    ("ce_fe", 4562.36, -1.1, "II"), ("ce_fe", 4628.16, -1.2, "II"),
    ("nd_fe", 4061.08, -1.1, "II"), ("nd_fe", 4109.45, -1.2, "II"),
    ("eu_fe", 4129.72, -0.9, "II"), ("eu_fe", 6645.06, -1.3, "II"), ("eu_fe", 4205.04, -1.0, "II"),
    ("o_fe", 7771.94, -0.5, "I"), ("o_fe", 7774.17, -0.6, "I"), ("o_fe", 7775.39, -0.7, "I"),
    ("o_fe", 6300.30, -1.3, "I"),
    ("c_fe", 4300.3, 0.3, "M"), ("c_fe", 4305.0, 0.1, "M"), ("c_fe", 4310.0, 0.0, "M"),
    ("c_fe", 4313.6, 0.2, "M"), ("c_fe", 5165.2, -0.5, "M"), ("c_fe", 9061.44, -0.8, "I"),
    ("n_fe", 3883.0, 0.0, "M"), ("n_fe", 4215.6, -0.4, "M"), ("n_fe", 4181.0, -0.5, "M"),
]
# Hydrogen: (air Å, central depth at 5777 K, Lorentz HWHM in Å at 5777 K)
_HYDROGEN = [(6562.80, 1.2, 2.0), (4861.33, 1.3, 2.2), (4340.47, 1.3, 2.0), (4101.74, 1.2, 1.8),
             (3970.07, 1.0, 1.6), (8750.47, 0.4, 1.2), (8862.78, 0.4, 1.2), (9014.91, 0.3, 1.0)]


class LineDouble:
    """TEST DOUBLE with the emulator's API (see the module docstring). Units: K, dex, km/s, Å."""

    resolution = 1800.0

    def __init__(self, device: str = "cpu", dtype=torch.float64, half_window: int = 20,
                 wavelength: np.ndarray | None = None, fwhm_angstrom: float | None = None):
        """``wavelength``: another grid uniform in ln λ (tests of resampling);
        ``fwhm_angstrom``: an LSF of constant FWHM in Å instead of constant R (per line)."""
        self.device = torch.device(device)
        self.dtype = dtype
        self.fwhm_angstrom = fwhm_angstrom
        self.wavelength = lamost_wavelength() if wavelength is None else np.asarray(wavelength, float)
        self.label_names = list(_NAMES)
        lnw = np.log(self.wavelength)
        self._lnw = torch.as_tensor(lnw, dtype=dtype, device=self.device)
        el = np.array([_IDX[e] for e, *_ in _LINES])
        wl = air_to_vacuum(np.array([w for _, w, *_ in _LINES]))
        rng = np.random.default_rng(7)  # per-line sensitivities, fixed once
        kind = np.array([k for *_, k in _LINES])
        a_t = np.where(kind == "I", -0.45, np.where(kind == "II", 0.10, -1.2)) + rng.normal(0, 0.12, len(_LINES))
        a_g = np.where(kind == "I", 0.05, np.where(kind == "II", -0.30, 0.10)) + rng.normal(0, 0.05, len(_LINES))
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        self._el = torch.as_tensor(el, device=self.device)
        self._is_n = torch.as_tensor(np.array([e == "n_fe" for e, *_ in _LINES]), device=self.device)
        self._lnl = t(np.log(wl))
        self._tau0 = t(np.array([x for _, _, x, _ in _LINES]))
        self._a_t, self._a_g = t(a_t), t(a_g)
        step = lnw[1] - lnw[0]
        centre = np.round((np.log(wl) - lnw[0]) / step).astype(int)
        half_window = int(half_window * 2.3e-4 / step)   # the same ±Å on finer grids
        off = np.arange(-half_window, half_window + 1)
        self._idx = torch.as_tensor(np.clip(centre[:, None] + off, 0, lnw.size - 1), device=self.device)
        hw = np.array([h for h in _HYDROGEN])
        hl = air_to_vacuum(hw[:, 0])
        self._h_ln = t(np.log(hl))
        self._h_depth, self._h_w = t(hw[:, 1]), t(hw[:, 2] / hl)   # HWHM in ln λ
        hc = np.round((np.log(hl) - lnw[0]) / step).astype(int)
        hoff = np.arange(-int(150 * 2.3e-4 / step), int(150 * 2.3e-4 / step) + 1)
        self._hidx = torch.as_tensor(np.clip(hc[:, None] + hoff, 0, lnw.size - 1), device=self.device)
        self._spec = GridSpec()
        # pixel edges in ln λ and the equivalent width (ln λ) of a line of unit depth at R = 1800
        edges = np.concatenate([[lnw[0] - step / 2], 0.5 * (lnw[1:] + lnw[:-1]), [lnw[-1] + step / 2]])
        self._edges, self._width = t(edges), t(np.diff(edges))
        self._ew_unit = (c_kms / 1800.0) / (2.3548 * c_kms) * 2.5066

    # ------------------------------------------------------------------ forward model
    def _single(self, lab: torch.Tensor) -> torch.Tensor:
        """(32,) labels → (3909,) flux: 1 − Σ EW_i · (pixel-averaged unit-area Gaussian).

        Lines add linearly in flux, each with an equivalent width fixed by the labels, so
        that convolving the spectrum with any extra Gaussian LSF is exactly the same as
        adding that LSF's variance to every line — what the resolution-matching tests
        rely on. Profiles are averaged over each pixel (erf), not sampled, so a line far
        narrower than a pixel still has the right equivalent width.
        """
        teff, logg, vmic, vbroad, rv, feh = (lab[_IDX[n]] for n in ("teff", "logg", "vmic", "vbroad", "rv", "fe_h"))
        xh = feh + torch.where(self._el == _IDX["fe_h"], torch.zeros_like(lab[self._el]), lab[self._el])
        # CN bands depend on both C and N
        xh = xh + torch.where(self._is_n, 0.5 * lab[_IDX["c_fe"]], torch.zeros_like(xh))
        dt = (teff - 5777.0) / 1000.0
        tau = 10.0 ** (self._tau0 + xh + self._a_t * dt + self._a_g * (logg - 4.44))
        # a saturating curve of growth: depth → 0.85 for strong lines, which grow with vmic
        depth = 0.85 * (1.0 - torch.exp(-tau * (1.0 + 0.25 * (vmic - 1.0) * tau / (1.0 + tau))))
        ew = depth * self._ew_unit                                    # ln λ units
        shift = torch.log1p(rv / c_kms)
        lsf = (c_kms / self.resolution if self.fwhm_angstrom is None
               else c_kms * self.fwhm_angstrom / torch.exp(self._lnl))
        sig = torch.sqrt(lsf ** 2 + vbroad ** 2 + vmic ** 2) / (2.3548 * c_kms)
        total = self._add(ew, self._lnl + shift, sig.expand_as(ew), self._idx)
        # hydrogen: Gaussian (in quadrature with the LSF) whose width grows with Teff
        tt = teff / 5777.0
        w_h = self._h_w * tt ** 3 * 10.0 ** (-0.08 * (logg - 4.44))
        lsf_h = (c_kms / self.resolution if self.fwhm_angstrom is None
                 else c_kms * self.fwhm_angstrom / torch.exp(self._h_ln))
        sig_h = torch.sqrt(w_h ** 2 + (lsf_h ** 2 + vbroad ** 2 + vmic ** 2) / (2.3548 * c_kms) ** 2)
        ew_h = self._h_depth * tt ** 2 * 0.5 * w_h * 2.5066
        total = total + self._add(ew_h, self._h_ln + shift, sig_h, self._hidx)
        return 1.0 - total

    def _add(self, ew, centre, sig, idx):
        """Σ_i ew_i × (mean over each pixel of a unit-area Gaussian at ``centre_i``, σ ``sig_i``)."""
        lo = (self._edges[idx] - centre[:, None]) / (sig[:, None] * 1.41421356)
        hi = (self._edges[idx + 1] - centre[:, None]) / (sig[:, None] * 1.41421356)
        prof = 0.5 * (torch.erf(hi) - torch.erf(lo)) / self._width[idx]
        return torch.zeros_like(self._lnw).index_add(0, idx.reshape(-1), (ew[:, None] * prof).reshape(-1))

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.vmap(self._single)(x)

    def __call__(self, labels):
        is_np = not isinstance(labels, torch.Tensor)
        x = torch.as_tensor(np.asarray(labels, dtype=float) if is_np else labels, dtype=self.dtype, device=self.device)
        one = x.dim() == 1
        out = self._batch(x.reshape(-1, len(_NAMES)))
        out = out[0] if one else out
        return out.detach().cpu().numpy().astype(np.float64) if is_np else out

    def jacobian(self, labels):
        """(N, 32, 3909): d flux / d label, per K, dex, km/s."""
        is_np = not isinstance(labels, torch.Tensor)
        x = torch.as_tensor(np.asarray(labels, dtype=float) if is_np else labels, dtype=self.dtype, device=self.device)
        one = x.dim() == 1
        jac = torch.func.vmap(torch.func.jacfwd(self._single))(x.reshape(-1, len(_NAMES))).transpose(1, 2)
        jac = jac[0] if one else jac
        return jac.detach().cpu().numpy().astype(np.float64) if is_np else jac

    # ------------------------------------------------------------------ domain
    def domain_violations(self, labels) -> list[list[str]]:
        x = np.atleast_2d(np.asarray(labels, dtype=float))
        s = self._spec
        out = []
        trend = galactic_trend(x[:, _IDX["fe_h"]])
        for r, row in enumerate(x):
            bad = []
            for name, (lo, hi) in (("teff", s.teff), ("fe_h", s.fe_h), ("vmic", s.vmic), ("logg", (1.0, 4.75))):
                if not lo <= row[_IDX[name]] <= hi:
                    bad.append(name)
            bad += [n for n, c in trend.items() if abs(row[_IDX[n]] - c[r]) > s.xfe_halfwidth]
            out.append(bad)
        return out

    def in_domain(self, labels) -> np.ndarray:
        return np.array([not v for v in self.domain_violations(labels)])


#: four stars for the fitting tests (``double_stars`` in conftest writes them): a dwarf, a
#: giant, a hot metal-rich dwarf and a subgiant, 500–800 K apart, radial velocities of both signs
TRUTHS = [{"teff": 5600, "logg": 4.3, "fe_h": -0.2, "rv": -40}, {"teff": 4800, "logg": 2.7, "fe_h": -0.8, "rv": 90},
          {"teff": 6200, "logg": 4.1, "fe_h": 0.1, "rv": 10}, {"teff": 5100, "logg": 3.4, "fe_h": -0.5, "rv": 0}]


def make_double(device: str = "cpu", **_):
    """Factory for ``--emulator tests.fitting_double:make_double`` style loading."""
    return LineDouble(device="cpu" if device == "auto" else device)


def noisy_spectrum(emu, labels: dict, snr: float, seed: int, continuum=None, meta=None):
    """A :class:`Spectrum` from the double at ``labels`` with Gaussian noise of S/N ``snr``
    per pixel (relative to the continuum), optionally multiplied by a smooth ``continuum``."""
    from phdlspec_app.io import Spectrum

    rng = np.random.default_rng(seed)
    vec = L.to_vector(labels)
    flux = emu(vec)
    cont = np.ones_like(flux) if continuum is None else continuum
    sigma = cont / snr
    obs = flux * cont + rng.normal(0.0, 1.0, flux.size) * sigma
    return Spectrum(emu.wavelength.copy(), obs, 1.0 / sigma**2, np.zeros(flux.size, bool),
                    meta={"source": f"double-{seed}", "resolution": 1800.0, **(meta or {})})

