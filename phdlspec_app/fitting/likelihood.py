"""The likelihood: emulator → model LSF → pseudo-continuum → χ², with fixed labels and priors.

χ²(θ) = rᵀ C⁻¹ r over the good pixels, r = y − m(θ), m(θ) = B f(θ) / C[B f(θ)] (see
``preprocess``), plus Σ ((θ_k − μ_k)/σ_k)² over Gaussian priors. C is diagonal
(1/ivar_y: the noise plus the model's uncorrelated error) unless the prepared spectrum
carries a correlated model error (``Prepared.model_basis``, K vectors U_k in model flux):
then C = D + Σ_k V_k V_kᵀ, V_k the linear response of the observable to U_k at the current
labels, and C⁻¹ is applied by the Woodbury identity (cost O(K P) per spectrum). Both parts
may depend on the star (``Prepared.model_local``): they are then taken at the labels the
likelihood is linearized about. The free labels are a subset of the 32
schema labels; the others are held at their fixed values. Every evaluation of a
population (CMA-ES) or of all walkers (emcee) is one batched emulator call.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

from .. import labels as L
from ..preprocess import Prepared

__all__ = ["Likelihood", "FitCancelled", "check_cancel"]

_VBROAD = L.label_names().index("vbroad")
_RV = L.label_names().index("rv")


class FitCancelled(RuntimeError):
    """The caller's cancel event was set; the fit stopped."""


def check_cancel(cancel) -> None:
    """Raise :class:`FitCancelled` if ``cancel`` (anything with ``is_set()``) is set."""
    if cancel is not None and cancel.is_set():
        raise FitCancelled("fit cancelled")


class Likelihood:
    """χ² of labels against one prepared observation.

    Parameters
    ----------
    emulator : any object with the emulator API (``__call__``, ``jacobian``)
    prep : the :class:`~phdlspec_app.preprocess.Prepared` observation
    free : indices (schema order) of the labels that vary
    base : (32,) values of every label (fixed ones keep theirs)
    priors : {index: (mean, sigma)} Gaussian priors, in label units
    batch_size : the most label vectors per emulator call (bounds memory)
    cancel : an Event-like object checked before every emulator call
    """

    def __init__(self, emulator, prep: Prepared, free, base, priors=None, batch_size: int = 1024, cancel=None,
                 linearize: bool = True):
        self.emu = emulator
        self.prep = prep
        self.free = np.asarray(free, int)
        self.base = np.asarray(base, float).copy()
        self.priors = dict(priors or {})
        self.batch_size = int(batch_size)
        self.cancel = cancel if cancel is not None else threading.Event()
        self.n_evals = 0
        # Sums run over the good pixels only: where the observation is masked the model
        # observable may be undefined (the pseudo-continuum of a long masked stretch is
        # 0/0), and NaN × zero weight would still poison the χ².
        self.good = np.asarray(prep.good, bool)
        self._gi = torch.as_tensor(np.nonzero(self.good)[0])
        self._y = torch.as_tensor(np.asarray(prep.y, float)[self.good])
        self._w = torch.as_tensor(np.asarray(prep.ivar_y, float)[self.good])
        self._A = None  # (K, Pg) L⁻¹ V W: the correlated model error's Woodbury factor
        self._lin_at = None  # the labels (32,) the model error was last linearized about
        if linearize and (getattr(prep, "model_basis", None) is not None
                          or getattr(prep, "model_local", None) is not None):
            self.linearize_model_error(self.base)
        p_idx = [k for k in self.priors]
        self._prior_free = [(int(np.nonzero(self.free == k)[0][0]), *self.priors[k]) for k in p_idx
                            if k in set(self.free.tolist())]

    def linearize_model_error(self, labels: np.ndarray) -> None:
        """Carry the model error basis (``prep.model_basis``) through the star's ``vbroad``
        and ``rv``, the LSF and the pseudo-continuum at ``labels`` (32,)
        (:meth:`_observable_response`), and set the Woodbury factor A = L⁻¹ V W with L Lᵀ = I + V W Vᵀ.
        When the model error depends on the star (``prep.model_local``), both parts are
        first taken at ``labels``. No-op without a model error, or when it was last
        linearized at these very labels."""
        labels = np.asarray(labels, float)
        if self._lin_at is not None and np.array_equal(self._lin_at, labels):
            return
        # the memo is set only once every part is done: a failure half-way (a NaN model,
        # a bad local error) must not make the retry at the same labels a no-op
        self._lin_at = None
        if getattr(self.prep, "model_local", None) is not None:
            self.prep = self.prep.at_star(labels)
            self._w = torch.as_tensor(np.asarray(self.prep.ivar_y, float)[self.good])
        U = getattr(self.prep, "model_basis", None)
        if U is None:
            self._lin_at = labels.copy()
            return
        from ..emulator.broadening import broaden_and_shift

        f = torch.as_tensor(np.asarray(self.emu(labels[None]), dtype=np.float64)).reshape(1, -1)
        U = torch.as_tensor(np.asarray(U, np.float64))
        # the basis is measured at rest with vbroad = 0: it moves and widens with the star's lines
        k = U.shape[0]
        U = broaden_and_shift(U, torch.full((k,), labels[_VBROAD], dtype=torch.float64),
                              torch.full((k,), labels[_RV], dtype=torch.float64))
        V = self._observable_response(f, U)[1][:, self._gi]  # (K, Pg)
        VW = V * self._w
        M = torch.eye(V.shape[0], dtype=torch.float64) + VW @ V.T
        Lc = torch.linalg.cholesky(M)
        self._A = torch.linalg.solve_triangular(Lc, VW, upper=False)
        self._lin_at = labels.copy()

    def restrict(self, free, base, priors=None) -> Likelihood:
        """The likelihood of the same observation over other free labels ``free`` (schema
        indices) about ``base`` (32,), with ``priors`` ({index: (mean, sigma)}), sharing this
        one's model error as last linearized (no new linearization: a tenth of a second
        each with the default model's local error). A parent built with
        ``linearize=False`` and never linearized passes on no correlated model error."""
        part = Likelihood(self.emu, self.prep, free, base, priors, batch_size=self.batch_size, cancel=self.cancel,
                          linearize=False)
        part._w, part._A, part._lin_at = self._w, self._A, self._lin_at
        return part

    @property
    def model_error_varies(self) -> bool:
        """True when the model error depends on the labels (linearized about a star's)."""
        return self._A is not None or getattr(self.prep, "model_local", None) is not None

    def _quad(self, r: torch.Tensor) -> torch.Tensor:
        """rᵀ C⁻¹ r for residuals r (..., Pg) on the good pixels."""
        c = (r**2 * self._w).sum(-1)
        if self._A is not None:
            c = c - ((r @ self._A.T) ** 2).sum(-1)
        return c

    def cinv(self, v: np.ndarray) -> np.ndarray:
        """C⁻¹ v for v (..., Pg) on the good pixels (numpy)."""
        v = np.asarray(v, float)
        out = v * self._w.numpy()
        if self._A is not None:
            A = self._A.numpy()
            out = out - (v @ A.T) @ A
        return out

    @property
    def ndim(self) -> int:
        return int(self.free.size)

    @property
    def dof(self) -> int:
        return max(1, self.prep.n_good - self.ndim)

    def full(self, theta: np.ndarray) -> np.ndarray:
        """Free-label vectors (N, ndim) → full label vectors (N, 32)."""
        th = np.atleast_2d(np.asarray(theta, float))
        out = np.tile(self.base, (th.shape[0], 1))
        out[:, self.free] = th
        return out

    def model(self, labels: np.ndarray) -> torch.Tensor:
        """(N, 32) labels → (N, P) model observable (float64 torch, CPU)."""
        labels = np.atleast_2d(labels)
        out = []
        for s in range(0, labels.shape[0], self.batch_size):
            check_cancel(self.cancel)
            f = self.emu(labels[s:s + self.batch_size])
            out.append(torch.as_tensor(np.asarray(f, dtype=np.float64)).reshape(-1, self.prep.y.size))
        self.n_evals += labels.shape[0]
        return self.prep.model_observable(torch.cat(out))

    def chi2_labels(self, labels: np.ndarray) -> np.ndarray:
        """(N, 32) → (N,) data χ² (no priors); non-finite models give +inf."""
        m = self.model(labels)[:, self._gi]
        c = self._quad(self._y - m).numpy()
        return np.where(np.isfinite(c), c, np.inf)

    def data_chi2(self, model: np.ndarray) -> float:
        """χ² of one model observable (P,), as returned by :meth:`jacobian`, over the good
        pixels (no priors)."""
        m = torch.as_tensor(np.asarray(model, float)[self.good])
        return float(self._quad(self._y - m))

    def prior_chi2(self, theta: np.ndarray) -> np.ndarray:
        th = np.atleast_2d(theta)
        out = np.zeros(th.shape[0])
        for j, mu, sig in self._prior_free:
            out += ((th[:, j] - mu) / sig) ** 2
        return out

    def objective(self, theta: np.ndarray) -> np.ndarray:
        """(N, ndim) free labels → (N,) χ² + prior penalty."""
        th = np.atleast_2d(theta)
        return self.chi2_labels(self.full(th)) + self.prior_chi2(th)

    def objective_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, ndim) free labels → ((N,) χ² + prior penalty, (N, ndim) its gradient).

        One batched forward and one backward pass through emulator, LSF and
        pseudo-continuum (reverse-mode autodiff: the gradient of a scalar costs about one
        more forward pass, whatever the number of labels). Non-finite values give +inf
        with a zero gradient."""
        th = np.atleast_2d(np.asarray(theta, float))
        vals, grads = [], []
        for s in range(0, th.shape[0], self.batch_size):
            check_cancel(self.cancel)
            x = torch.tensor(th[s:s + self.batch_size], dtype=torch.float64, requires_grad=True)
            lab = torch.as_tensor(self.base, dtype=torch.float64).expand(x.shape[0], -1).clone()
            lab[:, torch.as_tensor(self.free)] = x
            with torch.enable_grad():
                f = self.emu(lab)
                f = f.to(device="cpu", dtype=torch.float64).reshape(x.shape[0], -1)
                m = self.prep.model_observable(f)[:, self._gi]
                c = self._quad(self._y - m)
                for j, mu, sig in self._prior_free:
                    c = c + ((x[:, j] - mu) / sig) ** 2
                g, = torch.autograd.grad(c.sum(), x)
            c, g = c.detach().numpy(), g.numpy()
            bad = ~(np.isfinite(c) & np.all(np.isfinite(g), axis=1))
            vals.append(np.where(bad, np.inf, c))
            grads.append(np.where(bad[:, None], 0.0, g))
        self.n_evals += th.shape[0]
        return np.concatenate(vals), np.concatenate(grads)

    def jacobian(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model observable m (P,) and its Jacobian (32, P) at one (32,) label vector,
        through the LSF and the pseudo-continuum: d(b/C[b]) = db/C[b] − b C[db]/C[b]²."""
        check_cancel(self.cancel)
        lab = np.asarray(labels, float)[None]
        f = torch.as_tensor(np.asarray(self.emu(lab), dtype=np.float64)).reshape(1, -1)
        j = torch.as_tensor(np.asarray(self.emu.jacobian(lab), dtype=np.float64)).reshape(-1, f.shape[-1])
        m, dm = self._observable_response(f, j)
        self.n_evals += 1
        return m.numpy(), dm.numpy()

    def _observable_response(self, f: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model observable m (P,) of flux ``f`` (1, P) and its linear response to flux
        perturbations ``d`` (K, P), through the LSF and the pseudo-continuum:
        d(b/C[b]) = db/C[b] − b C[db]/C[b]²."""
        bm, cont = self.prep.broaden_model, self.prep.continuum
        b, db = bm.apply(f)[0], bm.apply(d)
        cb = cont(b)
        return b / cb, db / cb - b * cont(db) / cb**2

    def fisher(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(m (P,), J (32, P), F (ndim, ndim)): the Fisher matrix J C⁻¹ Jᵀ over the free
        labels and the good pixels, plus the Gaussian priors' 1/σ². m and J cover every
        pixel (undefined, NaN, where the observation is masked)."""
        m, jac = self.jacobian(labels)
        jf = jac[self.free][:, self.good]
        F = self.cinv(jf) @ jf.T
        for j, _, sig in self._prior_free:
            F[j, j] += 1.0 / sig**2
        return m, jac, F

    def profile_step(self, theta: np.ndarray, held: np.ndarray, jac: np.ndarray, fisher: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """χ² at free-label vectors ``theta`` (N, ndim) and one Gauss–Newton step of each
        row's other labels towards their conditional optimum, row i's label ``held[i]``
        (index into the free labels) staying where it is: ((N,) χ² + prior penalty,
        (N, ndim) stepped labels). The step uses the Jacobian ``jac`` (32, P) and Fisher
        matrix ``fisher`` (ndim, ndim) of the optimum with each row's own residual, so one
        batched model call follows a profile valley that bends away from the straight
        line (the C–O valley of cool stars). Labels the data do not constrain do not move."""
        th = np.atleast_2d(np.asarray(theta, float))
        held = np.asarray(held, int)
        r = self._y - self.model(self.full(th))[:, self._gi]
        chi2 = self._quad(r).numpy() + self.prior_chi2(th)
        r = np.nan_to_num(r.numpy())
        jf = np.asarray(jac, float)[self.free][:, self.good]
        g = self.cinv(r) @ jf.T  # (N, ndim): -1/2 the gradient of chi2 with J held at the optimum
        for j, mu, sig in self._prior_free:
            g[:, j] -= (th[:, j] - mu) / sig**2
        out = th.copy()
        F = np.asarray(fisher, float)
        n = th.shape[1]
        for k in np.unique(held):
            rows = np.nonzero(held == k)[0]
            o = np.r_[0:k, k + 1:n]
            Foo = F[np.ix_(o, o)]
            ok = np.diag(Foo) > 1e-12 * max(np.diag(Foo).max(), 1e-300)
            oo = o[ok]
            step = np.linalg.lstsq(Foo[np.ix_(ok, ok)], g[np.ix_(rows, oo)].T, rcond=None)[0].T
            out[np.ix_(rows, oo)] += step
        return np.where(np.isfinite(chi2), chi2, np.inf), out

    def noise_fisher(self, jac: np.ndarray) -> np.ndarray:
        """(ndim, ndim) Fisher matrix of the observation's own noise alone (no model error)
        for the observable's Jacobian ``jac`` (32, P), plus the Gaussian priors' 1/σ²."""
        iv = self.prep.ivar_y if self.prep.ivar_y_obs is None else self.prep.ivar_y_obs
        jf = np.asarray(jac)[self.free][:, self.good]
        F = (jf * np.asarray(iv)[self.good]) @ jf.T
        for j, _, sig in self._prior_free:
            F[j, j] += 1.0 / sig**2
        return F

    def emulator_floor(self, labels: np.ndarray) -> np.ndarray | None:
        """(ndim, ndim) covariance of the free labels that the emulator's own error adds at
        ``labels`` (32,): the local second moment of the label shifts the held-out spectra's
        errors cause in a fit like this one (the observation's S/N, these free labels and
        priors; ``LocalModelError.label_covariance``). None when the model error has none."""
        cov_of = getattr(getattr(self.prep, "model_local", None), "label_covariance", None)
        if cov_of is None:
            return None
        prec = np.zeros(len(self.base))
        for j, _, sig in self._prior_free:
            prec[self.free[j]] += 1.0 / sig**2
        snr = float(self.prep.snr) if np.isfinite(self.prep.snr) and self.prep.snr > 0 else 50.0
        C = cov_of(np.asarray(labels, float), snr=snr, free=self.free, prior_precision=prec)
        return None if C is None else np.asarray(C, float)[np.ix_(self.free, self.free)]

    def names(self) -> list[str]:
        return [L.LABELS[i].name for i in self.free]
