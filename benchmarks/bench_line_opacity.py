"""Benchmark of the line-opacity hot path: N lines × L layers × W wavelength points.

A synthetic but realistic setup: a solar-like stratification (T 4000→9500 K, n_e
10¹⁰→10¹⁵ cm⁻³, n_H 10¹⁴→10¹⁷ cm⁻³ over L layers), lines spread uniformly over
3700–9100 Å with log gf ∈ [−5, 0.5], E_low ∈ [0, 6] eV, from nine metals in solar
proportions (Asplund 2009) with a crude 10 % / 90 % neutral / ion split, missing damping
constants (so the Cowley/Unsöld approximations run), on a grid uniform in ln λ.
The continuum is the coarse built-in estimate (``alpha_cont=None``).

Prints one JSON object: times of the forward pass and of a backward pass (d Σα / d T,
d/d vmic), the number of lines kept, the number of line×point evaluations, peak RSS.

    .venv/bin/python benchmarks/bench_line_opacity.py --lines 100000 --layers 80 --points 300000
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from types import SimpleNamespace as NS

import numpy as np
import torch

from phdlspec_app.physics.line_absorption import line_absorption

ELEMENTS = {  # Z: (A(X), mass amu)
    26: (7.50, 55.845), 22: (4.95, 47.867), 20: (6.34, 40.078), 24: (5.64, 51.996),
    28: (6.22, 58.693), 12: (7.60, 24.305), 14: (7.51, 28.086), 23: (3.93, 50.942),
    25: (5.43, 54.938),
}


def setup(n_lines, n_layers, n_points, seed=0):
    rng = np.random.default_rng(seed)
    L = n_layers
    s = torch.linspace(0, 1, L, dtype=torch.float64)
    T = 4000 + 5500 * s**3
    ne = 10 ** (10 + 5 * s)
    nH = 10 ** (14 + 3 * s)
    atoms = torch.zeros(L, 93, 3, dtype=torch.float64)
    U = torch.ones(L, 93, 3, dtype=torch.float64)
    atoms[:, 1, 0] = nH
    for z, (A, _) in ELEMENTS.items():
        n = nH * 10 ** (A - 12)
        atoms[:, z, 0] = 0.1 * n
        atoms[:, z, 1] = 0.9 * n
        U[:, z, 0] = 25.0
        U[:, z, 1] = 40.0
    zs = np.array(list(ELEMENTS))
    Z = rng.choice(zs, n_lines)
    charge = (rng.random(n_lines) < 0.15).astype(int)
    wl = np.sort(rng.uniform(3700, 9100, n_lines))
    nan = np.full(n_lines, np.nan)
    ll = NS(wavelength=wl, species=np.array([f"X {'I' * (c + 1)}" for c in charge]), Z=Z,
            charge=charge, log_gf=rng.uniform(-5, 0.5, n_lines),
            E_lower=rng.uniform(0, 6, n_lines), gamma_rad=nan, gamma_stark=nan,
            vdw_log_gamma6=nan, abo_sigma=nan, abo_alpha=nan,
            mass=np.array([ELEMENTS[z][1] for z in Z]), source=np.array(["bench"] * n_lines))
    grid = torch.exp(torch.linspace(np.log(3700), np.log(9100), n_points, dtype=torch.float64))
    atm = NS(T=T.clone().requires_grad_(True), ne=ne, P=None)
    eos = NS(atoms=atoms, U=U, molecules={}, mol_U={})
    return ll, grid, atm, eos


def ges_linelist(n_max=None):
    """The Gaia-ESO v6 atomic list (Turbospectrum format, shared data) parsed minimally:
    isotope-specific gf used as given, air wavelengths used as vacuum (irrelevant for a
    timing), fdamp > 20 → ABO (σ.α), < 0 → log γ₆, Turbospectrum's γ_rad (0 → classical)."""
    from phdlspec_app.paths import physics_dir
    path = physics_dir() / "linelists" / "ges_v6_turbospectrum" / "nlte_ges_linelist_jmg17feb2022_I_II"
    rows, z, ion = [], 0, 1
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("'") and i + 1 < len(lines) and lines[i + 1].startswith("'"):
            tok = ln.replace("'", " ").split()
            z, ion = int(float(tok[0])), int(tok[1])
            i += 2
            continue
        t = ln.split()
        rows.append((float(t[0]), float(t[1]), float(t[2]), float(t[3]), float(t[5]), z, ion - 1))
        i += 1
    a = np.array(rows)
    a = a[np.argsort(a[:, 0])][:n_max]
    wl, E, lgf, fd, grad, Z, ch = a.T
    Z, ch = Z.astype(int), ch.astype(int)
    abo = fd > 20
    from phdlspec_app.physics.atomic_data import atomic_masses
    nan = np.full(wl.size, np.nan)
    return NS(wavelength=wl, species=np.array(["X"] * wl.size), Z=Z, charge=ch, log_gf=lgf,
              E_lower=E, gamma_rad=np.where(grad > 1, grad, np.nan), gamma_stark=nan,
              vdw_log_gamma6=np.where(fd < 0, fd, np.nan),
              abo_sigma=np.where(abo, np.floor(fd), np.nan),
              abo_alpha=np.where(abo, fd - np.floor(fd), np.nan),
              mass=atomic_masses()[Z], source=np.array(["ges"] * wl.size))


def solar_like_eos(n_layers):
    """n/U of every element Z ≤ 92 at a crude solar mix (Asplund 2009 via the EOS module's
    abundances when present, else A = 7.5 − 0.1 Z), 10 % neutral."""
    _, grid, atm, eos = setup(10, n_layers, 10)
    nH = eos.atoms[:, 1, 0]
    try:
        from phdlspec_app.physics.abundances import solar_abundances
        A = np.asarray(solar_abundances(), float)
    except Exception:
        A = 7.5 - 0.1 * np.arange(93)
    A = np.nan_to_num(A, nan=-5.0)
    for z in range(2, 93):
        n = nH * 10 ** (A[z] - 12)
        eos.atoms[:, z, 0] = 0.1 * n
        eos.atoms[:, z, 1] = 0.9 * n
        eos.U[:, z, 0] = 25.0
        eos.U[:, z, 1] = 40.0
    return atm, eos


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--layers", type=int, default=80)
    ap.add_argument("--points", type=int, default=300_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--ges", action="store_true",
                    help="use the real Gaia-ESO v6 line list (4200-9200 A) from the shared data")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    comp = {"auto": "auto", "yes": True, "no": False}[args.compile]
    ll, grid, atm, eos = setup(args.lines, args.layers, args.points)
    if args.ges:
        ll = ges_linelist(args.lines)
        atm, eos = solar_like_eos(args.layers)
        atm.T.requires_grad_(True)
        grid = torch.exp(torch.linspace(np.log(4200), np.log(9200), args.points,
                                        dtype=torch.float64))
    vmic = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    # warm-up (compilation, cached on disk by inductor after the first process)
    t0 = time.perf_counter()
    line_absorption(ll, grid[:2000], atm, eos, vmic, compile=comp).sum().backward()
    atm.T.grad = None
    vmic.grad = None
    t_warm = time.perf_counter() - t0

    t0 = time.perf_counter()
    alpha, stats = line_absorption(ll, grid, atm, eos, vmic, compile=comp, return_stats=True)
    t_fwd = time.perf_counter() - t0
    out = dict(linelist="GES v6" if args.ges else "synthetic", lines=stats.n_input, layers=args.layers, points=args.points, threads=args.threads,
               n_selected=stats.n_selected, n_chunks=stats.n_chunks,
               line_point_evaluations=stats.n_points,
               voigt_evaluations=stats.n_points * args.layers, compiled=stats.compiled,
               warmup_s=round(t_warm, 2), forward_s=round(t_fwd, 2))
    if not args.no_backward:
        t0 = time.perf_counter()
        alpha.sum().backward()
        out["backward_s"] = round(time.perf_counter() - t0, 2)
        out["grad_finite"] = bool(torch.isfinite(atm.T.grad).all() and torch.isfinite(vmic.grad))
    out["peak_rss_GB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
