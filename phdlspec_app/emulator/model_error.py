"""model_error: the emulator's own error spectrum, measured on held-out engine spectra.

An emulator is not the engine. Where it is off by more than the noise (the blue, strong
lines, the edges of the domain) a fit that trusts it blindly gets error bars several times
too small. The error spectrum sigma_model(lambda) is the rms, per pixel, of emulator - engine
over spectra the emulator was not trained on; the likelihood then weights each pixel by
1 / (sigma_obs^2 + sigma_model^2).

The error is not independent between pixels: a spectrum that is off in Teff is off in every
line at once, and a likelihood that treats 3900 correlated errors as independent averages
them down and gives label errors a few times too small (measured: pull std 2-2.5 at S/N 50
with the diagonal error alone). :func:`error_basis` therefore splits the held-out residuals
into a correlated part, a low-rank covariance spanned by the residuals themselves, and an
uncorrelated remainder per pixel (what the other spectra's residuals cannot reproduce, by
leave-one-out projection), scaled so that the two add up to the measured variance per pixel.
The likelihood applies the low-rank part with the Woodbury identity.

The error is not the same everywhere either: the rms residual of a held-out spectrum is
≈ 0.0076 below 4200 K (molecular bands) and ≈ 0.0016 above 5500 K, and its shapes differ
(bands in cool stars, Balmer wings in hot ones; 235 held-out spectra of the grid,
2026-12-06). One average error made cool stars' label errors too small (robust pull
1.4-2.0 in Teff, log g, [Fe/H] below 4800 K at S/N 50). :class:`LocalModelError` therefore
builds the basis and remainder at each star from the held-out residuals weighted by their
distance in (Teff, log g, [Fe/H]); the likelihood takes them at the labels it linearizes
about.

Even so, a cool star's own emulator error moves its labels by more than that covariance
allows: a star's residual is never quite a combination of its neighbours', and what is
left over is treated as independent between pixels. Measured on the held-out spectra at
S/N 50, the shift of the best fit that a star's residual alone causes is 1.8-2.5 times the
noise's Cramér–Rao bound in Teff, log g, [Fe/H], C and O below 4800 K (0.3-1.0 times above
5800 K), which is exactly the excess scatter of the injection test. :func:`label_shifts`
measures that shift for every held-out spectrum (from normal equations kept in the model
file, :func:`shift_equations`, so that it is solved for the fit's own S/N, free labels and
priors), and :meth:`LocalModelError.label_covariance` gives their weighted second moment
near a star: the fitter adds it to the noise's covariance of the labels, a systematic
floor measured, not assumed.
"""
from __future__ import annotations

import numpy as np

from .domain import label_bounds

__all__ = ["residuals", "leave_one_out", "error_basis", "projection_remainder",
           "rms_error", "LocalModelError", "label_shifts", "shift_equations", "solve_shifts"]


def residuals(emulator, labels: np.ndarray, flux: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, W) emulator - engine for engine spectra ``flux`` (N, W) at ``labels`` (N, 32),
    normalized flux (vbroad and rv as in the labels)."""
    labels = np.asarray(labels, float)
    out = np.concatenate([np.asarray(emulator(labels[i:i + batch]), float) for i in range(0, len(labels), batch)])
    return out - np.asarray(flux, float)


def rms_error(r: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """(W,) per-pixel rms of held-out residuals ``r`` (N, W), at least ``floor``."""
    if len(r) < 10:
        raise ValueError(f"need at least 10 held-out spectra to estimate the model error, got {len(r)}")
    return np.maximum(np.sqrt(np.nanmean(np.asarray(r, float) ** 2, axis=0)), floor)


def leave_one_out(r: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """(N, W): for each spectrum, the per-pixel rms of the OTHER spectra's residuals ``r``
    (N, W), so that a benchmark on held-out spectra never uses a star's own residual."""
    r2 = np.asarray(r, float) ** 2
    n = len(r2)
    return np.maximum(np.sqrt((r2.sum(0)[None] - r2) / (n - 1)), floor)


def projection_remainder(r: np.ndarray) -> np.ndarray:
    """(N, W): each residual spectrum minus its least-squares projection onto the span of
    the OTHER residuals ``r`` (N, W): the part of a new spectrum's error a basis made of
    the others cannot represent."""
    r = np.nan_to_num(np.asarray(r, float))
    n = len(r)
    G = r @ r.T
    out = np.empty_like(r)
    for j in range(n):
        o = np.r_[0:j, j + 1:n]
        Go = G[np.ix_(o, o)]
        c = np.linalg.lstsq(Go + 1e-12 * np.trace(Go) / len(o) * np.eye(len(o)), G[o, j], rcond=None)[0]
        out[j] = r[j] - c @ r[o]
    return out


def error_basis(r: np.ndarray, floor: float = 1e-4, remainder: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """The model error of held-out residuals ``r`` (N, W) as (basis (N, W), rest (W,)):
    covariance ``basis.T @ basis + diag(rest**2)``, normalized flux.

    rest^2 is the per-pixel mean square of :func:`projection_remainder` (clipped to the
    total variance s^2 = mean r^2), the basis is r / sqrt(N) scaled per pixel by
    sqrt(1 - rest^2 / s^2), so that the covariance's diagonal is s^2: purely diagonal when
    the residuals are independent between pixels, the full sample covariance when they
    lie in a few shared shapes. ``remainder``: :func:`projection_remainder` of ``r`` when
    already at hand."""
    r = np.nan_to_num(np.asarray(r, float))
    n = len(r)
    if n < 10:
        raise ValueError(f"need at least 10 held-out spectra for the model error basis, got {n}")
    s2 = np.maximum((r**2).mean(0), floor**2)
    q = projection_remainder(r) if remainder is None else np.asarray(remainder, float)
    rest2 = np.clip((q**2).mean(0), floor**2, s2)
    scale = np.sqrt(np.clip(1.0 - rest2 / s2, 0.0, 1.0))
    return r / np.sqrt(n) * scale[None], np.sqrt(rest2)



class LocalModelError:
    """The model error near a star: :func:`error_basis` of the held-out residuals, each
    weighted by exp(-d²/2), d its distance from the star in (Teff, log g, [Fe/H]) in units
    of :attr:`BANDWIDTH`. Calling it on a (32,) label vector gives (rest (W,), basis (K, W)),
    normalized flux, covariance ``basis.T @ basis + diag(rest**2)``, whose diagonal is the
    weighted mean square residual per pixel; only spectra with weight ≥ ``min_weight`` × the
    largest enter the basis (K ≤ N).

    residuals : (N, W) emulator - engine on held-out spectra; labels : (N, 32) theirs;
    remainders : (N, W) :func:`projection_remainder` of the residuals (computed if omitted);
    shifts : None or :func:`shift_equations`' (F, g, box) of the same spectra, for
    :meth:`label_covariance`.
    """

    #: below this many effective neighbours the label covariance leans on all the spectra
    MIN_NEIGHBOURS = 10.0

    #: one unit of distance: 500 K, 1 dex in log g, 0.75 dex in [Fe/H] (on the 235 held-out
    #: spectra of 2026-12-06 a star then has ≈ 30-80 effective neighbours)
    BANDWIDTH = {"teff": 500.0, "logg": 1.0, "fe_h": 0.75}

    def __init__(self, residuals: np.ndarray, labels: np.ndarray, remainders: np.ndarray | None = None,
                 shifts: np.ndarray | None = None, floor: float = 1e-4, min_weight: float = 1e-3):
        from .. import labels as L

        self.residuals = np.nan_to_num(np.asarray(residuals, float))
        self.labels = np.asarray(labels, float)
        if self.residuals.ndim != 2 or self.labels.shape != (len(self.residuals), len(L.LABELS)):
            raise ValueError(f"residuals {self.residuals.shape} and labels {self.labels.shape} do not match "
                             f"(expected (N, W) and (N, {len(L.LABELS)}))")
        if len(self.residuals) < 20:
            raise ValueError(f"need at least 20 held-out spectra for a local model error, got {len(self.residuals)}")
        self.remainders = (projection_remainder(self.residuals) if remainders is None
                           else np.nan_to_num(np.asarray(remainders, float)))
        if self.remainders.shape != self.residuals.shape:
            raise ValueError(f"remainders {self.remainders.shape} do not match residuals {self.residuals.shape}")
        self.shifts = None
        if shifts is not None:
            F, g, box = (np.nan_to_num(np.asarray(x, float)) for x in shifts)
            n, k = self.labels.shape
            if F.shape != (n, k, k) or g.shape != (n, k) or box.shape != (k,):
                raise ValueError(f"label shift equations F {F.shape}, g {g.shape}, box {box.shape} do not match "
                                 f"the labels {self.labels.shape}")
            self.shifts = (F, g, box)
        self.floor, self.min_weight = float(floor), float(min_weight)
        names = L.label_names()
        self._idx = [names.index(k) for k in self.BANDWIDTH]
        self._h = np.array(list(self.BANDWIDTH.values()))

    def weights(self, labels: np.ndarray) -> np.ndarray:
        """(N,) weight of each held-out spectrum for a star at ``labels`` (32,)."""
        x = np.asarray(labels, float).reshape(-1)[self._idx]
        if not np.all(np.isfinite(x)):
            raise ValueError(f"the model error needs finite Teff, log g and [Fe/H], got {x.tolist()}")
        d2 = (((self.labels[:, self._idx] - x) / self._h) ** 2).sum(1)
        return np.exp(-0.5 * (d2 - d2.min()))  # relative: the nearest spectrum weighs 1

    def n_effective(self, labels: np.ndarray) -> float:
        """Kish's effective number of held-out spectra behind the error at ``labels``."""
        return _kish(self.weights(labels))

    def __call__(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights(labels)
        keep = w >= self.min_weight
        w = w[keep] / w[keep].sum()
        r, q = self.residuals[keep], self.remainders[keep]
        s2 = np.maximum(w @ r**2, self.floor**2)
        rest2 = np.clip(w @ q**2, self.floor**2, s2)
        scale = np.sqrt(np.clip(1.0 - rest2 / s2, 0.0, 1.0))
        return np.sqrt(rest2), np.sqrt(w)[:, None] * r * scale[None]

    def label_covariance(self, labels: np.ndarray, snr: float = 50.0, free=None,
                         prior_precision: np.ndarray | None = None) -> np.ndarray | None:
        """(32, 32) weighted second moment near ``labels`` (32,) of the label shifts the
        held-out spectra's emulator errors cause in a fit at S/N ``snr`` over the ``free``
        labels with the fit's priors (:func:`solve_shifts`): the scatter the emulator's own
        error adds to a fit there (K, dex, km/s squared; zero rows for fixed labels).
        With fewer than MIN_NEIGHBOURS effective neighbours it is blended with the moment
        over all the spectra, so that a star at the edge of the grid never gets a floor
        from one or two spectra. None without shift equations."""
        if self.shifts is None:
            return None
        w = self.weights(labels)
        n_eff = _kish(w)
        w = w / w.sum()
        if n_eff < self.MIN_NEIGHBOURS:
            a = n_eff / self.MIN_NEIGHBOURS
            w = a * w + (1.0 - a) / len(w)
        keep = w >= self.min_weight * w.max()
        F, g, box = self.shifts
        b = solve_shifts(F[keep], g[keep], box, snr=snr, free=free, prior_precision=prior_precision)
        w = w[keep] / w[keep].sum()
        return (b * w[:, None]).T @ b


def _kish(w: np.ndarray) -> float:
    """Kish's effective sample size of weights ``w``."""
    return float(w.sum() ** 2 / (w**2).sum())


def shift_equations(emulator, labels: np.ndarray, flux: np.ndarray, masks="all", batch: int = 16
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first-order normal equations of a fit to each engine spectrum ``flux`` (N, W) at
    ``labels`` (N, 32) by the emulator, at unit noise per pixel: (F (N, 32, 32) = Jᵀ J,
    g (N, 32) = Jᵀ (y − m), box (32,)), over the good pixels of the fit's preprocessing
    (masks, pseudo-continuum), J the Jacobian of the normalized model m at the true labels.
    ``box`` is the precision 12/width² of a uniform distribution over the emulator's domain
    per label: a fit cannot leave the box. :func:`solve_shifts` turns them into the shift of
    the best fit that the emulator's error alone causes, for any S/N, free set and priors.
    The spectra are the grid's, at rest with vbroad = 0: the shifts miss vbroad's
    degeneracies with Teff and log g in broadened stars and the star's own masks."""
    import torch

    from ..io import Spectrum
    from ..preprocess import prepare

    labels, flux = np.asarray(labels, float), np.asarray(flux, float)
    wl = np.asarray(emulator.wavelength, float)
    lo, hi = label_bounds(emulator)
    box = 12.0 / np.maximum(hi - lo, 1e-12) ** 2
    n = len(labels)
    F, g = np.zeros((n, labels.shape[1], labels.shape[1])), np.zeros_like(labels)
    for s in range(0, n, batch):
        lab = labels[s:s + batch]
        f = np.asarray(emulator(lab), float)
        jac = np.asarray(emulator.jacobian(lab), float)
        for k in range(len(lab)):
            spec = Spectrum(wl, flux[s + k], np.ones(wl.size), np.zeros(wl.size, bool),
                            meta={"source": "held-out engine spectrum"})
            prep = prepare(spec, wl, float(getattr(emulator, "resolution", 1800.0)), masks=masks)
            good, cont = prep.good, prep.continuum
            ft, jt = torch.as_tensor(f[k][None]), torch.as_tensor(jac[k])
            cf = cont(ft)
            m = (ft / cf)[0].numpy()
            dm = (jt / cf - ft * cont(jt) / cf**2).numpy()[:, good]        # (32, G)
            F[s + k] = dm @ dm.T
            g[s + k] = dm @ (prep.y[good] - m[good])
    return F, g, box


def solve_shifts(F: np.ndarray, g: np.ndarray, box: np.ndarray, snr: float = 50.0, free=None,
                 prior_precision: np.ndarray | None = None) -> np.ndarray:
    """(N, 32) label shifts from :func:`shift_equations`' (F, g, box) for noise 1/``snr``
    per pixel: δ_f = (F_ff snr² + diag(box + prior)_f)⁻¹ g_f snr² over the ``free`` labels
    (indices; default all), ``prior_precision`` (32,) the fit's own Gaussian priors (1/σ²,
    0 where none). Fixed labels and labels the spectra do not constrain at all get 0."""
    F, g, box = np.asarray(F, float), np.asarray(g, float), np.asarray(box, float)
    free = np.arange(g.shape[1]) if free is None else np.asarray(free, int)
    extra = box if prior_precision is None else box + np.asarray(prior_precision, float)
    out = np.zeros_like(g)
    s2 = float(snr) ** 2
    for i in range(len(g)):
        Fi = F[i][np.ix_(free, free)] * s2
        ok = np.diag(Fi) > 1e-12 * max(np.diag(Fi).max(), 1e-300)
        idx = free[ok]
        out[i, idx] = np.linalg.solve(Fi[np.ix_(ok, ok)] + np.diag(extra[idx]), g[i, idx] * s2)
    return out


def label_shifts(emulator, labels: np.ndarray, flux: np.ndarray, masks="all", snr: float = 50.0) -> np.ndarray:
    """(N, 32): the first-order shift of the best fit, all labels free, at S/N ``snr``, that
    the emulator's error alone causes on each engine spectrum (:func:`shift_equations`,
    :func:`solve_shifts`)."""
    return solve_shifts(*shift_equations(emulator, labels, flux, masks=masks), snr=snr)
