"""``fit_spectrum``: one observed spectrum → :class:`FitResult`.

Pipeline: preprocess (``preprocess.prepare``) → RV and template first guess
(``optimize.rv_first_guess``) → the search: by default CMA-ES over the free atmospheric
labels with Levenberg–Marquardt over all free labels in between, twice
(``optimize.run_staged``), or CMA-ES over every free label then the LM polish
(``cmaes_scope="all"``, ``optimize.run_cmaes``); the LM's Fisher matrix (the emulator's
Jacobian) gives the Cramér–Rao covariance, to which the emulator's own error adds a floor
when the model measures it (``Likelihood.emulator_floor``) → optionally emcee (``mcmc.run_emcee``) →
per-element diagnostics (``diagnostics.element_diagnostics``) → flags.

Deterministic given ``seed`` (CMA-ES, the walkers' start and emcee's moves all draw from
it). ``cancel`` (anything with ``is_set()``, e.g. ``threading.Event``) is checked before
every emulator call and every MCMC step; a set event raises :class:`FitCancelled`.
``progress(stage, fraction)`` is called as the fit goes (stages: prepare, rv, cmaes,
polish, mcmc, diagnostics, done); a callback that takes a ``chi2`` keyword (or
``**kwargs``) also gets the current best χ² (plus prior terms) in cmaes, polish and mcmc.
"""
from __future__ import annotations

import inspect
import time

import numpy as np

from .. import labels as L
from ..io import Spectrum, read_spectrum
from .diagnostics import covariance, element_diagnostics
from .likelihood import FitCancelled, Likelihood, check_cancel
from .optimize import levenberg_marquardt, run_cmaes, run_staged, rv_first_guess, search_box
from .posterior import line_posterior
from ..preprocess import FitInputError, prepare
from .result import FitResult

__all__ = ["fit_spectrum", "model_error_terms", "FLAGS", "METHODS", "FitCancelled", "FitInputError", "parse_fix",
           "parse_prior"]

METHODS = ("cmaes", "mcmc", "both")

#: every flag a fit can carry, with its meaning
FLAGS = {
    "noise_estimated": "the input had no usable errors; the noise was estimated with DER_SNR",
    "resolution_assumed": "the input did not state its resolution; the model's R was assumed",
    "partial_coverage": "the spectrum covers less than 90 % of the model's wavelength range",
    "many_masked_pixels": "more than 30 % of the covered pixels are masked",
    "low_snr": "median S/N per pixel below 10",
    "out_of_domain": "the best fit lies outside the emulator's training domain (values are extrapolations); "
                     "the labels outside are in the result's info['domain_violations']",
    "out_of_domain_atmosphere:<labels>": "Teff, log g, [Fe/H] or vmic itself is outside the training domain, so "
                                         "every label is an extrapolation (without it only some [X/Fe] are)",
    "at_bound:<label>": "the optimum sits on the edge of the search box for this label",
    "poor_fit": "reduced chi2 above 3: the model does not describe the spectrum",
    "mcmc_not_converged": "the chain stopped at the step cap before 50 autocorrelation times",
    "unconstrained:<labels>": "abundances the spectrum cannot constrain (reported as NaN)",
}
_IDX = {n: i for i, n in enumerate(L.label_names())}
_ATMOSPHERE = ("teff", "logg", "fe_h", "vmic")


def parse_fix(items) -> dict[str, float]:
    """``["teff=5000", ...]`` or {name: value} → {canonical name: value}."""
    if isinstance(items, dict):
        return {L.canonical_name(k): float(v) for k, v in items.items()}
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--fix expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[L.canonical_name(k)] = float(v)
    return out


def parse_prior(items) -> dict[str, tuple[float, float]]:
    """``["logg=4.4,0.1", ...]`` or {name: (mean, sigma)} → {canonical name: (mean, sigma)}."""
    pairs = items.items() if isinstance(items, dict) else []
    out = {}
    for k, v in pairs:
        out[L.canonical_name(k)] = (float(v[0]), float(v[1]))
    if not isinstance(items, dict):
        for item in items or []:
            try:
                k, v = item.split("=", 1)
                mu, sig = (float(x) for x in v.split(","))
            except ValueError:
                raise ValueError(f"--prior expects NAME=MEAN,SIGMA, got {item!r}") from None
            out[L.canonical_name(k)] = (mu, sig)
    for k, (_, sig) in out.items():
        if not sig > 0:
            raise ValueError(f"prior on {k}: sigma must be positive, got {sig}")
    return out


def _progress_adapter(progress):
    """``progress`` called as ``(stage, fraction, chi2=...)``; the χ² is dropped for
    callbacks that only take (stage, fraction)."""
    if progress is None:
        return lambda stage, frac, **info: None
    try:
        params = inspect.signature(progress).parameters.values()
        takes = any(p.kind is p.VAR_KEYWORD or p.name == "chi2" for p in params)
    except (TypeError, ValueError):  # builtins without a signature
        takes = False
    if takes:
        return progress
    return lambda stage, frac, **info: progress(stage, frac)


def _load(emulator, device):
    if emulator is None or isinstance(emulator, str):
        from ..emulator import load_emulator

        return load_emulator(path=emulator, device=device or "auto")
    return emulator


def model_error_terms(emulator, model_error=True):
    """(sigma (P,) or None, basis (K, P) or None, local or None): the model error
    ``fit_spectrum`` adds to the noise for its ``model_error`` argument (True: the
    emulator's own, correlated split when it has one, made at each star when the emulator
    can (``Emulator.model_error_local``); False/None: none; an array; or a (sigma, basis)
    or (sigma, basis, local) tuple, local a callable labels (32,) → (sigma, basis))."""
    if model_error is True:
        basis = getattr(emulator, "model_error_basis", None)
        sigma = getattr(emulator, "model_error_rest" if basis is not None else "model_error", None)
        local = getattr(emulator, "model_error_local", None) if basis is not None else None
        return sigma, basis, local
    if isinstance(model_error, tuple):
        sigma, basis, local = (*model_error, None)[:3]
        return np.asarray(sigma, float), None if basis is None else np.asarray(basis, float), local
    if model_error is False or model_error is None:
        return None, None, None
    return np.asarray(model_error, float), None, None


def fit_spectrum(spectrum, emulator=None, method: str = "cmaes", fix=None, priors=None, seed: int = 0,
                 device: str | None = None, progress=None, cancel=None, *, resolution: float | None = None,
                 fwhm: float | None = None, air: bool | None = None, masks="all", extra_masks=None,
                 cmaes_evals: int = 3000, restarts: int = 1, polish: bool = True, cmaes_scope: str = "atmosphere",
                 mcmc_max_steps: int = 20000, mcmc_moves: str = "hmc",
                 n_tau: float = 50.0, nwalkers: int | None = None, keep_chain: bool = False,
                 model_error=True) -> FitResult:
    """Fit the 32 labels of one spectrum.

    Parameters
    ----------
    spectrum : a :class:`~phdlspec_app.io.Spectrum` or a path (read with ``read_spectrum``; ``air``
        overrides the file's medium)
    emulator : any object with the emulator API; None or a path loads one with
        ``emulator.load_emulator(path, device)``
    method : "cmaes" (CMA-ES + polish; Cramér–Rao errors), "mcmc" or "both" (emcee from the
        optimum; medians and 16/84 percentiles)
    fix : {label: value} held fixed (units K, dex, km/s); priors : {label: (mean, sigma)}
    seed : makes the fit deterministic; device : for loading the emulator (``auto``/cpu/cuda)
    progress : callable(stage, fraction); cancel : Event-like, stops the fit promptly
    resolution / fwhm : the observation's resolving power or LSF FWHM (Å), overriding the header
    masks, extra_masks : user masks (see ``masks``); cmaes_evals, restarts : CMA-ES budget;
    cmaes_scope : "atmosphere" (default, ``optimize.run_staged``: CMA-ES over the free
        atmospheric labels — Teff, logg, vmic, [Fe/H], vbroad, rv — then Levenberg–Marquardt
        over all free labels, twice; ``polish`` does not apply, the LM is part of it) or "all"
        (CMA-ES over every free label, then the LM polish if ``polish``). Measured with the
        default emulator and likelihood (BENCHMARKS.md, 2026-12-05): on 30 injected ab initio
        spectra the two give the same label scatter (Teff 42 vs 43 K, log g 0.100 vs 0.101) and
        on 20 real LAMOST stars "atmosphere" ends at an equal or lower χ² for 15, in 3.5 s
        against 20 s per fit
    mcmc_max_steps, n_tau, nwalkers, keep_chain : emcee settings; mcmc_moves : "hmc"
        (default: Hamiltonian Monte Carlo with the emulator's autodiff gradient) or "de"
        (differential evolution, gradient-free; for emulators without a torch path)
    model_error : True (default): add the emulator's error spectrum (``emulator.model_error``,
        normalized flux, 1 sigma per pixel; see ``emulator.model_error``) to the noise, so that
        the errors include what the emulator gets wrong, with its correlated part
        (``emulator.model_error_basis``) when the model has one; False: trust the emulator
        exactly; a (3909,) array: an uncorrelated error to use instead; or a tuple
        (sigma (3909,), basis (K, 3909)[, local]): uncorrelated remainder and correlated part,
        and optionally a callable labels (32,) → (sigma, basis) that makes them at the star
        (``emulator.model_error_local``; the fit takes it at the first guess and the optimum).
        When ``local`` also has ``label_covariance`` (the label shifts the emulator's error
        causes near a star, measured on held-out spectra), the label errors are the noise's
        Cramér–Rao bound plus that floor (``result.info["emulator_floor"]``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t0 = time.perf_counter()
    timings = {}
    say = _progress_adapter(progress)
    if not isinstance(spectrum, Spectrum):
        spectrum = read_spectrum(spectrum, air=air)
    emu = _load(emulator, device)
    fix = parse_fix(fix or {})
    priors = parse_prior(priors or {})
    check_cancel(cancel)
    say("prepare", 0.0)
    prep = prepare(spectrum, emu.wavelength, float(getattr(emu, "resolution", 1800.0)), resolution=resolution,
                   fwhm=fwhm, masks=masks, extra_masks=extra_masks)
    sigma_model, basis, local = model_error_terms(emu, model_error)
    if sigma_model is not None:
        prep = prep.with_model_error(sigma_model, basis, local)
    timings["prepare"] = time.perf_counter() - t0

    base = L.defaults()
    for k, v in fix.items():
        base[_IDX[k]] = v
    free = np.array([i for i, n in enumerate(L.label_names()) if n not in fix], int)
    if free.size == 0:
        raise ValueError("every label is fixed: nothing to fit")
    prior_idx = {_IDX[k]: v for k, v in priors.items() if k not in fix}
    lik = Likelihood(emu, prep, free, base, prior_idx, cancel=cancel)
    lo_all, hi_all = search_box(emu)

    # first guess: templates × RV grid
    say("rv", 0.0)
    t = time.perf_counter()
    rv_fixed = "rv" in fix
    rvr = (fix["rv"], fix["rv"]) if rv_fixed else (lo_all[_IDX["rv"]], hi_all[_IDX["rv"]])
    guess = rv_first_guess(lik, rv_range=rvr, fixed={_IDX[k]: v for k, v in fix.items()})
    start = guess["labels"]
    start[list(_IDX[k] for k in fix)] = [fix[k] for k in fix]
    for k, (mu, _) in prior_idx.items():
        start[k] = mu
    if not rv_fixed:
        j = _IDX["rv"]
        lo_all[j] = max(lo_all[j], guess["rv"] - 100.0)
        hi_all[j] = min(hi_all[j], guess["rv"] + 100.0)
    lo, hi = lo_all[free], hi_all[free]
    x0 = np.clip(start[free], lo, hi)
    lik.linearize_model_error(lik.full(x0)[0])  # the correlated model error, about the first guess
    timings["rv"] = time.perf_counter() - t

    t = time.perf_counter()
    if cmaes_scope not in ("atmosphere", "all"):
        raise ValueError(f"cmaes_scope must be 'atmosphere' or 'all', got {cmaes_scope!r}")
    sub = np.array([j for j, i in enumerate(free) if L.LABELS[i].group == "atmosphere"], int)
    if cmaes_scope == "atmosphere" and 0 < sub.size < free.size:
        cm = run_staged(lik, x0, lo, hi, sub, seed=seed, max_evals=cmaes_evals, restarts=restarts, progress=say)
        timings["cmaes"], timings["polish"] = cm["cmaes_seconds"], cm["lm_seconds"]
        lm = {**cm["lm"], "iterations": cm["lm_iterations"]}
    else:
        cm = run_cmaes(lik, x0, lo, hi, seed=seed, max_evals=cmaes_evals, restarts=restarts, progress=say)
        timings["cmaes"] = time.perf_counter() - t
        t = time.perf_counter()
        lm = levenberg_marquardt(lik, cm["theta"], lo, hi, max_iter=40 if polish else 0, progress=say)
        timings["polish"] = time.perf_counter() - t
    theta, F = lm["theta"], lm["fisher"]
    model, jac = lm["model"], lm["jacobian"]
    if lik.model_error_varies:  # the errors with the model error taken about the optimum
        lik.linearize_model_error(lik.full(theta)[0])
        model, jac, F = lik.fisher(lik.full(theta)[0])
    best = lik.full(theta)[0]
    # With a measured emulator floor the errors are the noise's plus the label shifts the
    # emulator's own error causes near this star; the model error in the likelihood still
    # weights the pixels, but its pixel-space covariance misses most of those shifts.
    floor = lik.emulator_floor(best)
    cov_lik = covariance(F)  # the likelihood's own: where the walkers start
    cov = cov_lik if floor is None else covariance(lik.noise_fisher(jac)) + floor
    sig = np.sqrt(np.diag(cov))
    err_lo = np.zeros(32)
    err_hi = np.zeros(32)
    err_lo[free] = err_hi[free] = sig
    # [X/Fe]: report the posterior inside the search box (the emulator's [X/Fe] window over
    # all [Fe/H]) along each one's profile line (median, 16/84 percentiles;
    # ``posterior.line_posterior``), as emcee would on the same flat prior: a weak line's
    # Fisher σ at an upward-fluctuated optimum is several times too small below, and the
    # box cuts the Gaussian. The other labels are Gaussian where they are measured, and
    # their boxes (vbroad's 0–100 km/s cap, rv's ±100 km/s about the scan) only bound the
    # search: a flat prior over them would pull an unresolved vbroad to tens of km/s
    # (measured). With MCMC the chain's percentiles replace all of this, so it is skipped.
    reported = best.copy()
    ab = np.nonzero(np.isin(free, [lab.index for lab in L.xfe_labels()]))[0]  # the [X/Fe]
    if ab.size and method == "cmaes":
        check_cancel(cancel)
        reported[free[ab]], err_lo[free[ab]], err_hi[free[ab]] = line_posterior(
            lik.objective, theta, cov_lik, sig, lo, hi, ab,
            refine=lambda X, held: lik.profile_step(X, held, jac, F))
    mc = None
    samples = None
    if method in ("mcmc", "both"):
        from .mcmc import run_emcee

        t = time.perf_counter()
        ok = np.isfinite(np.diag(cov_lik))
        cov_start = np.where(np.isfinite(cov_lik), cov_lik, 0.0)
        cov_start[~ok, ~ok] = ((hi - lo)[~ok] * 0.05) ** 2
        mc = run_emcee(lik, theta, cov_start, lo, hi, seed=seed, nwalkers=nwalkers, n_tau=n_tau,
                       max_steps=mcmc_max_steps, keep_chain=keep_chain, progress=say, moves=mcmc_moves)
        timings["mcmc"] = time.perf_counter() - t
        best = lik.full(mc["median"])[0]
        reported = best
        model, jac, F = lik.fisher(best)
        floor = lik.emulator_floor(best)
        add = 0.0
        if floor is not None:
            # the chain already holds the model error's pixel covariance: add only what the
            # floor asks for beyond it (to first order, the two errors' variances differ by
            # [F⁻¹ − F_noise⁻¹]_kk at the same labels)
            pixel_part = np.diag(covariance(F)) - np.diag(covariance(lik.noise_fisher(jac)))
            add = np.maximum(np.nan_to_num(np.diag(floor) - pixel_part, nan=0.0), 0.0)
        err_lo[free] = np.sqrt((mc["median"] - mc["p16"]) ** 2 + add)
        err_hi[free] = np.sqrt((mc["p84"] - mc["median"]) ** 2 + add)
        samples = mc.pop("samples")
        cov = mc["covariance"] + np.diag(add) if floor is not None else mc["covariance"]
    check_cancel(cancel)
    say("diagnostics", 0.0)
    t = time.perf_counter()
    elements = element_diagnostics(lik, best, model, jac, F)
    timings["diagnostics"] = time.perf_counter() - t

    chi2 = lik.data_chi2(model)
    chi2_red = chi2 / lik.dof
    flags = list(prep.flags)
    if hasattr(emu, "domain_violations"):
        outside = list(emu.domain_violations(best[None])[0])
    else:
        outside = [] if bool(np.asarray(emu.in_domain(best[None]))[0]) else ["?"]
    if outside:
        flags.append("out_of_domain")
        # an [X/Fe] outside its training window is common on real spectra and touches that
        # element only; the atmosphere outside the domain makes every label an extrapolation
        atm = [n for n in outside if n in _ATMOSPHERE]
        if atm:
            flags.append("out_of_domain_atmosphere:" + ",".join(atm))
    span = hi - lo
    for j, i in enumerate(free):
        name = L.LABELS[i].name
        if name in ("rv", "vbroad"):
            continue
        if span[j] > 0 and (theta[j] - lo[j] < 1e-3 * span[j] or hi[j] - theta[j] < 1e-3 * span[j]):
            flags.append(f"at_bound:{name}")
    if chi2_red > 3.0:
        flags.append("poor_fit")
    if mc is not None and not mc["converged"]:
        flags.append("mcmc_not_converged")
    unc = [k for k, d in elements.items() if not d.constrained]
    if unc:
        flags.append("unconstrained:" + ",".join(unc))
    names = L.label_names()
    err_lo_d = {n: float(err_lo[i]) for i, n in enumerate(names)}
    err_hi_d = {n: float(err_hi[i]) for i, n in enumerate(names)}
    timings["total"] = time.perf_counter() - t0
    say("done", 1.0)
    info = {**lik.prep.info, "rv_guess": guess["rv"], "template": guess["template"], "cmaes_evals": cm["evals"],
            "cmaes_runs": cm["runs"], "polish_iterations": lm["iterations"], "emulator_evals": lik.n_evals,
            "domain_violations": outside}
    if floor is not None:
        info["emulator_floor"] = {n: float(np.sqrt(max(floor[j, j], 0.0))) for j, n in enumerate(lik.names())}
    return FitResult(
        labels=L.to_dict(reported), err_lo=err_lo_d, err_hi=err_hi_d, method=method, chi2=chi2,
        chi2_reduced=float(chi2_red), n_pixels=prep.n_good, n_free=lik.ndim, snr=prep.snr, flags=flags,
        elements=elements, fixed=sorted(fix), priors={k: v for k, v in priors.items()},
        free_names=lik.names(), wavelength=prep.wavelength, observed=prep.y, model=np.asarray(model),
        ivar=lik.prep.ivar_y, good=prep.good, mcmc={k: v for k, v in mc.items() if k not in ("chain",)} if mc else None,
        samples=samples, chain=mc.get("chain") if mc else None, covariance=np.asarray(cov, float),
        meta=dict(prep.meta), info=info, timings=timings)

