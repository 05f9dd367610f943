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
        self.calls += 1
        out = self._flux(np.atleast_2d(lab))
        return out[0] if single else out

    def jacobian(self, labels):
        lab = np.atleast_2d(np.asarray(labels, dtype=float))
        n, m = lab.shape
        steps = np.array([1.0 if name == "teff" else 0.01 for name in self.label_names])
        eye = np.eye(m) * steps
        rows = np.concatenate([lab[:, None, :] + eye[None], lab[:, None, :] - eye[None]], axis=1)
        flux = self._flux(rows.reshape(-1, m)).reshape(n, 2 * m, -1)
        return (flux[:, :m] - flux[:, m:]) / (2 * steps[None, :, None])

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
    def _flux(self, lab):
        """(N, 32) labels -> (N, W) flux, vectorized over rows."""
        teff, logg, vmic, vbroad, rv, feh = (lab[:, i:i + 1] for i in range(6))
        abund = np.where(self._owner == 5, feh, feh + lab[:, self._owner])  # (N, lines)
        depth = self._strength * (1 / (1 + np.exp(-(abund + 1.0) * 1.5))) * (5777.0 / teff) ** 2
        depth = np.clip(depth * (1 + 0.05 * (vmic - 1.0) + 0.02 * (4.44 - logg)), 0, 0.95)
        shift = 1 + rv / _C  # (N, 1)
        wl = self.wavelength
        dlog = np.log10(wl[1] / wl[0])
        # The grid is uniform in log10(lambda): a line spans a fixed number of pixels.
        sigma_px = np.hypot(_C / 1800 / 2.355, vbroad / 2.355) / _C / np.log(10) / dlog  # (N, 1)
        k = int(np.ceil(6 * sigma_px.max())) + 1
        pos = (np.log10(self._centers[None, :] * shift) - np.log10(wl[0])) / dlog  # (N, lines)
        idx = np.round(pos).astype(int)[..., None] + np.arange(-k, k + 1)  # (N, lines, 2k+1)
        ok = (idx >= 0) & (idx < wl.size)
        idx = np.clip(idx, 0, wl.size - 1)
        prof = np.where(ok, np.exp(-0.5 * ((idx - pos[..., None]) / sigma_px[..., None]) ** 2), 0.0)
        n = lab.shape[0]
        logf = np.zeros(n * wl.size)
        np.add.at(logf, (idx + wl.size * np.arange(n)[:, None, None]).ravel(),
                  np.log1p(-depth[..., None] * prof).ravel())
        flux = np.exp(logf.reshape(n, wl.size))
        hdepth = 0.5 * np.exp(-((teff - 7500) / 2500) ** 2)  # (N, 1)
        for c in self._balmer:
            flux *= 1 - hdepth * np.exp(-0.5 * ((wl[None, :] - c * shift) / (8.0 + 0.5 * logg)) ** 2)
        return flux


def fake_fit(seconds: float | None = 1.0, steps: int = 20):
    """A stand-in for ``fitting.fit_spectrum`` (same signature and result type) that takes
    ``seconds`` (None: ``cmaes_evals / 300`` s, so the UI's budgets give 2, 10 or 27 s), reports progress with a chi2, honours ``cancel`` and returns the true labels of
    a simulated star (else the defaults): for testing the dashboard's fit wiring quickly."""
    import time

    from phdlspec_app.fitting import FitCancelled, FitResult
    from phdlspec_app.fitting.diagnostics import ElementDiagnostic
    from phdlspec_app.app.observation import fit_preprocessing

    def fit(spectrum, emulator, method="cmaes", fix=None, priors=None, seed=0, progress=None, cancel=None, **kw):
        duration = seconds if seconds is not None else kw.get("cmaes_evals", 3000) / 300
        for i in range(steps):
            if cancel is not None and cancel.is_set():
                raise FitCancelled("fit cancelled")
            if progress:
                progress("cmaes", i / steps, chi2=5000.0 / (i + 1))
            time.sleep(duration / steps)
        truth = spectrum.meta.get("true_labels") or L.to_dict(L.defaults())
        labels = {**L.to_dict(L.defaults()), **truth, **(fix or {})}
        prep = fit_preprocessing()(spectrum, emulator.wavelength)
        model = prep.model_observable(emulator(L.to_vector(labels)))
        free = [n for n in L.label_names() if n not in (fix or {})]
        err = {n: (0.0 if n in (fix or {}) else 0.05) for n in L.label_names()}
        elements = {lab.name: ElementDiagnostic(lab.name, lab.element.symbol, 12, 15.0, 3.0, 2.0, 0.0, 0.04, 0.05,
                                                lab.name != "cu_fe", lab.name in free)
                    for lab in L.abundance_labels() if lab.name != "fe_h"}
        rng = np.random.default_rng(seed)
        samples = (L.to_vector(labels)[[L.get_label(n).index for n in free]]
                   + 0.05 * rng.standard_normal((500, len(free)))) if method != "cmaes" else None
        g = prep.good
        chi2 = float((((prep.y - model) ** 2) * prep.ivar_y)[g].sum())
        return FitResult(labels=labels, err_lo=err, err_hi=err, method=method, chi2=chi2,
                         chi2_reduced=chi2 / max(int(g.sum()) - len(free), 1), n_pixels=int(g.sum()),
                         n_free=len(free), snr=prep.snr, flags=["unconstrained:cu_fe"], elements=elements,
                         fixed=sorted(fix or {}), priors=dict(priors or {}), free_names=free,
                         wavelength=prep.wavelength, observed=prep.y, model=model, ivar=prep.ivar_y, good=g,
                         mcmc=_fake_mcmc(samples, rng) if samples is not None else None,
                         samples=samples, meta=dict(prep.meta))

    return fit


def _fake_mcmc(samples, rng):
    """The ``FitResult.mcmc`` layout of ``fitting.mcmc.run_emcee`` for the fake fit."""
    d = samples.shape[1]
    trace = samples[:100, None, :] + 0.02 * rng.standard_normal((100, 16, d))
    steps = np.arange(200, 2001, 200)
    return {"tau": np.full(d, 30.0), "acceptance": 0.3, "steps": 2000, "nwalkers": 64, "converged": True,
            "burn": 60, "thin": 15, "trace": trace, "trace_steps": np.arange(1, 101) * 20, "n_tau": 50.0,
            "tau_steps": steps, "tau_history": np.outer(30.0 * (1 - np.exp(-steps / 600.0)), np.ones(d)),
            "covariance": np.cov(samples, rowvar=False)}


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


def test_double_rows_are_independent_and_elements_local():
    emu = EmulatorDouble()
    a, b = L.defaults(), L.to_vector({"teff": 5000, "vbroad": 40, "rv": 100})
    np.testing.assert_allclose(emu(np.stack([a, b]))[1], emu(b), atol=1e-12)
    jac = emu.jacobian(a)[0]
    mg = L.get_label("mg_fe").index
    assert np.abs(jac[mg]).max() > 0.01
    assert (np.abs(jac[mg]) > 1e-3).mean() < 0.2  # localized, like an element's lines
