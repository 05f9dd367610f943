"""SME (pysme-astro) as the reference synthesis, driven offline with *our* inputs.

SME is given the same model atmosphere (``method='embedded'``), the same line list
(converted to SME's "short" format, in air), the same abundances (explicitly, as
A(X) = 12 + log10 N_X/N_H: SME's default is Grevesse 2007) and the same damping
choices, so that differences isolate the synthesis itself. Recipe and gotchas:
``../shared/docs/sme-reference-notes.md``.

    from sme_reference import sme_normalized_spectrum
    wave_vac, flux = sme_normalized_spectrum(atm, A, vmic_kms, linelist, 5150, 5250)

SME writes ``~/.sme`` on first import and ``syntherr.log`` in the working
directory: callers (tests) point HOME and the working directory at a temporary
folder.
"""
from __future__ import annotations

import inspect

import numpy as np

from phdlspec_app.io.airvac import air_to_vacuum, vacuum_to_air
from phdlspec_app.physics.constants import amu, k_B
from phdlspec_app.physics.line_absorption import prepare_lines

__all__ = ["sme_normalized_spectrum", "sme_linelist_frame", "hydrogen_lines_for_sme", "sme_inputs",
           "use_sme_hydrogen_physics", "add_physics_options", "comparison_linelist"]


def add_physics_options(ap):
    """The validation scripts' shared options: ``--atoms-only`` and ``--no-level-dissolution``."""
    ap.add_argument("--atoms-only", action="store_true", help="drop the molecular lines from both codes")
    ap.add_argument("--no-level-dissolution", action="store_true",
                    help="give our engine SME's hydrogen physics (use_sme_hydrogen_physics)")


def comparison_linelist(args):
    """The default line list as both codes get it under :func:`add_physics_options`' options
    (applying ``--no-level-dissolution`` to our engine on the way)."""
    from phdlspec_app.physics.linelist import load_default_linelist

    if args.no_level_dissolution:
        use_sme_hydrogen_physics()
    ll = load_default_linelist()
    return ll[np.asarray(ll.Z) > 0] if args.atoms_only else ll


def use_sme_hydrogen_physics():
    """Give our engine SME's hydrogen physics for a like-with-like comparison: no Hummer &
    Mihalas (1988) occupation probabilities in the Balmer/Paschen lines and no dissolved-level
    H I bound-free opacity redward of the series limits (SMElib 6.13 has neither). Our
    default keeps both, as Korg.jl and Turbospectrum (HBOP) do; the difference is confined
    to the last ~300 A before the Balmer and Paschen limits (BENCHMARKS.md). Patches the
    module functions for the rest of the process: benchmarks only."""
    import functools

    import phdlspec_app.physics.continuum_absorption as CA
    import phdlspec_app.physics.hydrogen_lines as H

    H.hydrogen_line_absorption = functools.partial(H.hydrogen_line_absorption, use_mhd=False)
    H.hydrogen_line_partials = functools.partial(H.hydrogen_line_partials, use_mhd=False)
    CA.hydrogen_bf = functools.partial(CA.hydrogen_bf, level_dissolution=False)


def sme_inputs(synthesizer, labels):
    """Our atmosphere (dict of numpy arrays) and A(X) (93,) for ``labels``: what SME is given."""
    from phdlspec_app.physics import abundances

    atm, _, _ = synthesizer.state(labels)
    eps = abundances.number_fractions(labels).detach().numpy()
    A = 12 + np.log10(np.where(eps > 0, eps, 1e-30))
    A[0] = 0.0
    return {k: getattr(atm, k).detach().numpy() for k in ("rhox", "T", "P", "ne")}, A

_ROMAN = {"I": 1, "II": 2, "III": 3}
# Molecules of our line lists that SME's EOS (SMElib 6.13) also carries; SME names a
# molecular species like a neutral atom ("CH 1"). Its EOS solves their equilibrium with
# its own partition functions and dissociation constants, so the comparison covers our
# molecular equilibrium as well as the lines.
SME_MOLECULES = ("CH", "CN", "C2", "MgH", "TiO", "NH", "OH", "CO")
# log gamma6 at 1e4 K that our line absorption gives molecular lines the list leaves without one
MOLECULE_LOG_GAMMA6 = inspect.signature(prepare_lines).parameters["molecule_log_gamma6"].default


def _sme_species(name: str, molecules: bool = True) -> str | None:
    parts = name.split()
    if len(parts) == 2 and parts[1] in _ROMAN:
        return f"{parts[0]} {_ROMAN[parts[1]]}"
    if molecules and name in SME_MOLECULES:
        return f"{name} 1"
    return None


def sme_linelist_frame(ll, wl_min_vac: float, wl_max_vac: float, molecules: bool = True):
    """Our LineList (vacuum, physical damping units) → a pandas DataFrame in SME's
    short format (air wavelengths; log10 damping constants; 0 = SME's default).

    Molecular lines (``SME_MOLECULES``) go in unless ``molecules`` is False; their gf
    already carries the isotopic fraction (see ``linelists.species``), and SME applies
    none of its own."""
    import pandas as pd

    sel = (ll.wavelength >= wl_min_vac) & (ll.wavelength <= wl_max_vac)
    rows = []
    for i in np.flatnonzero(sel):
        sp = _sme_species(str(ll.species[i]), molecules)
        if sp is None:
            continue
        grad = ll.gamma_rad[i]
        gq = ll.gamma_stark[i]
        molecule = int(ll.Z[i]) == 0
        if np.isfinite(ll.abo_sigma[i]):
            # SME's packed ABO convention: integer part sigma (a0^2), fraction alpha
            gvw = float(np.floor(ll.abo_sigma[i]) + ll.abo_alpha[i])
        elif np.isfinite(ll.vdw_log_gamma6[i]):
            gvw = float(ll.vdw_log_gamma6[i])
        elif molecule:
            gvw = MOLECULE_LOG_GAMMA6  # what our engine gives a molecular line without one
        else:
            gvw = 0.0
        if molecule:
            gqst = -20.0  # our engine gives molecular lines no Stark broadening; SME's 0 means Cowley's
        else:
            gqst = float(np.log10(gq)) if np.isfinite(gq) and gq > 0 else 0.0
        rows.append(dict(species=sp, wlcent=float(vacuum_to_air(ll.wavelength[i])), excit=float(ll.E_lower[i]),
                         gflog=float(ll.log_gf[i]),
                         gamrad=float(np.log10(grad)) if np.isfinite(grad) and grad > 0 else 0.0,
                         gamqst=gqst, gamvw=gvw, atom_number=1.0, ionization=float(sp.split()[1])))
    return pd.DataFrame(rows)


def hydrogen_lines_for_sme(wl_min_vac: float, wl_max_vac: float, series=(2, 3), n_max=30):
    """Balmer/Paschen lines in the window as SME "H 1" entries (SME reads gamqst/gamvw
    as the lower/upper principal quantum numbers for hydrogen; it takes gf from gflog,
    which we fill with the same oscillator strengths our engine uses: the log gf
    attributes of the Stehle & Hutcheson tables, equal to Wiese & Fuhr 2009)."""
    import pandas as pd

    from phdlspec_app.physics.hydrogen_lines import hydrogen_transitions

    log_gf = {(t["lower"], t["upper"]): t["log_gf"] for t in hydrogen_transitions()}

    R_H = 109677.58340280  # cm^-1, Rydberg constant for hydrogen (reduced mass)
    rows = []
    for nl in series:
        for nu in range(nl + 1, n_max + 1):
            wl_vac = 1e8 / (R_H * (1.0 / nl**2 - 1.0 / nu**2))
            if wl_min_vac - 200 <= wl_vac <= wl_max_vac + 200 and (nl, nu) in log_gf:
                rows.append(dict(species="H 1", wlcent=float(vacuum_to_air(wl_vac)),
                                 excit=13.598434599702 * (1 - 1 / nl**2), gflog=log_gf[(nl, nu)], gamrad=0.0,
                                 gamqst=float(nl), gamvw=float(nu), atom_number=1.0, ionization=1.0))
    return pd.DataFrame(rows)


def sme_normalized_spectrum(atm: dict, A: np.ndarray, vmic_kms: float, linelist, wl_min_vac: float,
                            wl_max_vac: float, teff: float = 5777.0, logg: float = 4.44,
                            include_hydrogen: bool = True, mean_mass_amu: float = 1.258):
    """SME's normalized spectrum for our atmosphere and line list.

    Parameters
    ----------
    atm : dict of numpy arrays (layers top→bottom): rhox (g cm^-2), T (K), P (dyn cm^-2), ne (cm^-3)
    A : (93,) A(X) = 12 + log10(N_X/N_H), index Z
    vmic_kms : microturbulence, km/s
    linelist : our LineList (vacuum wavelengths)
    mean_mass_amu : mass per nucleus for rho (1.258 amu for Asplund 2009)

    Returns
    -------
    wave_vac (Angstrom), normalized flux — on SME's own adaptive grid.
    """
    import pandas as pd
    from pysme.abund import Abund
    from pysme.atmosphere.atmosphere import Atmosphere
    from pysme.linelist.linelist import LineList
    from pysme.sme import SME_Structure
    from pysme.synthesize import Synthesizer

    T = np.asarray(atm["T"], float)
    P = np.asarray(atm["P"], float)
    xne = np.asarray(atm["ne"], float)
    xna = P / (k_B * T) - xne
    smeatm = Atmosphere(teff=teff, logg=logg, vturb=vmic_kms, method="embedded", geom="PP", depth="RHOX",
                        interp="RHOX", rhox=np.asarray(atm["rhox"], float), temp=T, xne=xne, xna=xna,
                        rho=xna * mean_mass_amu * amu, monh=0.0, abund="asplund2009")
    frames = [sme_linelist_frame(linelist, wl_min_vac - 5, wl_max_vac + 5)]
    if include_hydrogen:
        frames.append(hydrogen_lines_for_sme(wl_min_vac, wl_max_vac))
    df = pd.concat(frames, ignore_index=True).sort_values("wlcent").reset_index(drop=True)
    sme = SME_Structure()
    sme.teff, sme.logg, sme.vmic, sme.vmac, sme.vsini = teff, logg, vmic_kms, 0.0, 0.0
    pattern = np.asarray(A, float)[1:100] if len(A) >= 100 else np.concatenate([np.asarray(A, float)[1:], np.full(100 - len(A), -20.0)])[:99]
    sme.abund = Abund(monh=0.0, pattern=pattern, type="H=12")
    sme.atmo = smeatm
    sme.linelist = LineList(df, lineformat="short", medium="air")
    lo, hi = float(vacuum_to_air(wl_min_vac)), float(vacuum_to_air(wl_max_vac))
    sme.wran = [[lo, hi]]
    sme = Synthesizer().synthesize_spectrum(sme)
    wave_air = np.asarray(sme.wave[0], float)
    return air_to_vacuum(wave_air), np.asarray(sme.synth[0], float)
