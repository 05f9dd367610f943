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
measures that shift for every held-out spectrum, and :meth:`LocalModelError.label_covariance`
gives their weighted second moment near a star: the fitter adds it to the noise's
covariance of the labels, a systematic floor measured, not assumed.
"""
from __future__ import annotations

import numpy as np

__all__ = ["estimate_model_error", "residuals", "leave_one_out", "error_basis", "projection_remainder",
           "rms_error", "LocalModelError", "label_shifts"]


def residuals(emulator, labels: np.ndarray, flux: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, W) emulator - engine for engine spectra ``flux`` (N, W) at ``labels`` (N, 32),
    normalized flux (vbroad and rv as in the labels)."""
    labels = np.asarray(labels, float)
    out = np.concatenate([np.asarray(emulator(labels[i:i + batch]), float) for i in range(0, len(labels), batch)])
    return out - np.asarray(flux, float)


def estimate_model_error(emulator, labels: np.ndarray, flux: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """(W,) rms of emulator - engine per pixel over held-out spectra (normalized flux, at
    least ``floor``). Pixels where a residual is non-finite are skipped in that spectrum."""
    return rms_error(residuals(emulator, labels, flux), floor)


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
    shifts : (N, 32) or None, :func:`label_shifts` of the same spectra, for
    :meth:`label_covariance`.
    """

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
        self.shifts = None if shifts is None else np.nan_to_num(np.asarray(shifts, float))
        if self.shifts is not None and self.shifts.shape != self.labels.shape:
            raise ValueError(f"label shifts {self.shifts.shape} do not match the labels {self.labels.shape}")
        self.floor, self.min_weight = float(floor), float(min_weight)
        names = L.label_names()
        self._idx = [names.index(k) for k in self.BANDWIDTH]
        self._h = np.array(list(self.BANDWIDTH.values()))

    def weights(self, labels: np.ndarray) -> np.ndarray:
        """(N,) weight of each held-out spectrum for a star at ``labels`` (32,)."""
        x = np.asarray(labels, float).reshape(-1)[self._idx]
        d2 = (((self.labels[:, self._idx] - x) / self._h) ** 2).sum(1)
        return np.exp(-0.5 * (d2 - d2.min()))  # relative: the nearest spectrum weighs 1

    def n_effective(self, labels: np.ndarray) -> float:
        """Kish's effective number of held-out spectra behind the error at ``labels``."""
        w = self.weights(labels)
        return float(w.sum() ** 2 / (w**2).sum())

    def __call__(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights(labels)
        keep = w >= self.min_weight
        w = w[keep] / w[keep].sum()
        r, q = self.residuals[keep], self.remainders[keep]
        s2 = np.maximum(w @ r**2, self.floor**2)
        rest2 = np.clip(w @ q**2, self.floor**2, s2)
        scale = np.sqrt(np.clip(1.0 - rest2 / s2, 0.0, 1.0))
        return np.sqrt(rest2), np.sqrt(w)[:, None] * r * scale[None]

    def label_covariance(self, labels: np.ndarray) -> np.ndarray | None:
        """(32, 32) weighted second moment of the held-out spectra's :func:`label_shifts`
        near ``labels`` (32,) (K, dex, km/s squared): the scatter the emulator's own error
        adds to a fit there. None without shifts."""
        if self.shifts is None:
            return None
        w = self.weights(labels)
        keep = w >= self.min_weight
        w = w[keep] / w[keep].sum()
        b = self.shifts[keep]
        return (b * w[:, None]).T @ b


def label_shifts(emulator, labels: np.ndarray, flux: np.ndarray, masks="all", snr: float = 50.0,
                 batch: int = 16) -> np.ndarray:
    """(N, 32): for each engine spectrum ``flux`` (N, W) at ``labels`` (N, 32), the change of
    the best-fit labels that the emulator's error alone causes, to first order: the
    solution of (Jᵀ J snr² + P) δ = Jᵀ (y − m) snr² over the good pixels of the fit's
    preprocessing (masks, pseudo-continuum), J the emulator's Jacobian of the normalized
    model m at the true labels, all 32 labels free, noise 1/``snr`` per pixel. P holds a
    weak Gaussian prior per label, the variance of a uniform distribution over the
    emulator's domain (width²/12): a fit cannot leave that box, so an error along a label
    the spectrum barely constrains moves it by at most about the box, not by the
    unbounded linear solution. Labels the spectrum does not constrain at all get 0."""
    import torch

    from ..io import Spectrum
    from ..preprocess import prepare

    from .. import labels as L

    labels, flux = np.asarray(labels, float), np.asarray(flux, float)
    wl = np.asarray(emulator.wavelength, float)
    lo, hi = np.array([lab.lo for lab in L.LABELS]), np.array([lab.hi for lab in L.LABELS])
    box = getattr(emulator, "domain_box", None) or {}
    for name, (a, b) in dict(box).items():
        j = L.label_names().index(L.canonical_name(name))
        lo[j], hi[j] = max(lo[j], a), min(hi[j], b)
    prior = 12.0 / np.maximum(hi - lo, 1e-12) ** 2
    out = np.zeros_like(labels)
    for s in range(0, len(labels), batch):
        lab = labels[s:s + batch]
        f = np.asarray(emulator(lab), float)
        jac = np.asarray(emulator.jacobian(lab), float)
        for k in range(len(lab)):
            spec = Spectrum(wl, flux[s + k], np.full(wl.size, 2500.0), np.zeros(wl.size, bool),
                            meta={"source": "held-out engine spectrum"})
            prep = prepare(spec, wl, float(getattr(emulator, "resolution", 1800.0)), masks=masks)
            g = prep.good
            cont = prep.continuum
            ft = torch.as_tensor(f[k][None])
            jt = torch.as_tensor(jac[k])
            cf = cont(ft)
            m = (ft / cf)[0].numpy()
            dm = (jt / cf - ft * cont(jt) / cf**2).numpy()[:, g]        # (32, G)
            F = dm @ dm.T * snr**2
            ok = np.diag(F) > 1e-12 * np.diag(F).max()
            Fo = F[np.ix_(ok, ok)] + np.diag(prior[ok])
            out[s + k, ok] = np.linalg.solve(Fo, dm[ok] @ (prep.y[g] - m[g]) * snr**2)
    return out
