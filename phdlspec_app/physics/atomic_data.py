"""Atomic and molecular data for the equation of state: symbols, masses, ionization
energies, partition functions and molecular equilibrium constants.

Every table is parsed once (``functools.lru_cache``) into numpy arrays; the functions that
take a temperature return torch tensors differentiable in T.

Sources (all read in place from ``physics_dir()/atomic``)
-------------------------------------------------------
- ``korg/partition_funcs.h5``: atomic partition functions U(T) of X I, X II, X III for
  Z = 1…92, computed by the Korg.jl authors from NIST levels, tabulated on a uniform grid
  in **ln T** (keys ``logT_min``, ``logT_step``, ``logT_max``: ln 1 K … ln 10⁵ K, 201
  points). H II and He III (bare nuclei) are absent: U = 1.
- ``korg/BarklemCollet2016-ionization_energies.dat``: χ(I→II), χ(II→III), χ(III→IV) in eV
  (Barklem & Collet 2016, A&A 588, A96).
- ``mendeleev/elements.db`` (SQLite, mendeleev 1.3.0): element symbols and standard
  atomic weights (amu).
- ``korg/barklem_collet_ks.h5``: log10 of the molecular equilibrium constants of Barklem
  & Collet 2016 as rewritten by Korg.jl (``lnTs``, ``logKs``, ``mols``, shape
  (42 temperatures, 282 molecules)). Convention (checked in Korg.jl's
  ``read_statmech_quantities.jl``/``statmech.jl`` and the script that wrote the file): the
  B&C tables are log10 K in SI pressure units, +1 per dex converts Pa → dyn cm⁻², so for a
  neutral molecule AB… the file holds the **partial-pressure** constant

      K_p = p(A) p(B) … / p(AB…)      [dyn cm⁻²]^(n_atoms − 1),

  with A, B the *neutral* atoms. In number densities, n(A) n(B)/n(AB) = K_p/(kT)^(n−1).
  Molecule names in the file list the atoms in order of Z ("OTi" = TiO, "HH" = H₂).
  As recommended by Aquilina et al. 2024 (and done in Korg.jl), the C₂ constant is
  corrected from the B&C dissociation energy 6.371 eV to Visser et al. (2019)'s 6.24 eV.
- ``korg/BarklemCollet2016-molecular_partition.dat``: molecular partition functions on
  the same 42 temperatures (10⁻⁵ … 10⁴ K). As in B&C, they exclude nuclear-spin
  degeneracy (U(H₂) → 1/4 as T → 0); they are consistent with the K_p above.

Interpolation
-------------
All tables are interpolated with a cubic spline in ln T (scipy's "not-a-knot"; Korg.jl
also uses cubic splines in ln T), evaluated in torch (piecewise cubic, so exactly
differentiable in T). Outside the tabulated range the value continues **linearly** in
ln T with the end slope (molecular tables stop at 10⁴ K, where molecules are negligible;
atomic ones at 10⁵ K). For the molecular tables only nodes with T ≥ 100 K are used: below
that log K ∝ −D/T varies by 10⁹ dex and would only add ringing to a spline whose stellar
range is 2000–20000 K.
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache

import h5py
import numpy as np
import torch
from scipy.interpolate import CubicSpline

from phdlspec_app.paths import physics_dir

from .constants import k_B_eV

__all__ = [
    "MAX_Z", "N_Z", "ROMAN", "ELEMENT_SYMBOLS", "atomic_symbol", "atomic_number",
    "parse_species", "species_name", "atomic_masses", "ionization_energies",
    "partition_function", "atomic_partition_table", "Molecule", "molecule",
    "available_molecules", "log10_equilibrium_constant", "molecular_partition_function",
    "molecular_tables", "TorchSpline", "H_MINUS_BINDING_EV",
]

MAX_Z = 92
#: length of per-element arrays (index = Z; index 0 unused)
N_Z = MAX_Z + 1
ROMAN = ("I", "II", "III")
#: electron affinity of H (eV): binding energy of H⁻ (Lykke et al. 1991: 0.754195 eV)
H_MINUS_BINDING_EV = 0.754195

# The symbols are also in elements.db; a literal tuple lets species names parse without
# touching the data directory (linelist readers call parse_species).
ELEMENT_SYMBOLS: tuple[str, ...] = (
    "", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P",
    "S", "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh",
    "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re",
    "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U",
)
_Z_OF = {s: z for z, s in enumerate(ELEMENT_SYMBOLS) if s}


def atomic_symbol(Z: int) -> str:
    """Element symbol of atomic number Z (1…92)."""
    if not 1 <= int(Z) <= MAX_Z:
        raise ValueError(f"atomic number {Z} outside 1…{MAX_Z}")
    return ELEMENT_SYMBOLS[int(Z)]


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol ('Fe' → 26; case-insensitive)."""
    s = symbol.strip()
    s = s[:1].upper() + s[1:].lower()
    try:
        return _Z_OF[s]
    except KeyError:
        raise ValueError(f"unknown element symbol {symbol!r}") from None


def parse_species(species) -> tuple[int, int]:
    """(Z, charge) of an atomic species: 'Fe I', 'Fe II', 'Fe 2', 'Fe+', 'Fe', 26, (26, 1).

    Charge 0 is the neutral atom (spectroscopic 'I')."""
    if isinstance(species, (int, np.integer)):
        return int(species), 0
    if isinstance(species, tuple):
        return int(species[0]), int(species[1])
    s = str(species).strip()
    m = re.fullmatch(r"([A-Za-z]{1,2})\s*(\+*)", s)
    if m:
        return atomic_number(m.group(1)), len(m.group(2))
    m = re.fullmatch(r"([A-Za-z]{1,2})\s+([IVX]+|\d+)", s)
    if not m:
        raise ValueError(f"cannot parse atomic species {species!r}")
    stage = m.group(2)
    romans = ROMAN + ("IV", "V", "VI")
    if stage.isdigit():
        charge = int(stage) - 1
    elif stage in romans:
        charge = romans.index(stage)
    else:
        raise ValueError(f"cannot parse ionization stage of {species!r}")
    return atomic_number(m.group(1)), charge


def species_name(Z: int, charge: int) -> str:
    """'Fe II' for (26, 1)."""
    return f"{atomic_symbol(Z)} {ROMAN[charge] if charge < 3 else charge + 1}"


# ---------------------------------------------------------------------------------------
# masses and ionization energies
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def atomic_masses() -> np.ndarray:
    """(93,) standard atomic weights in amu (mendeleev ``elements.db``; index 0 = 0).

    For elements without stable isotopes the db gives the mass of the longest-lived one."""
    out = np.zeros(N_Z)
    with sqlite3.connect(physics_dir() / "atomic" / "mendeleev" / "elements.db") as con:
        for z, w in con.execute("select atomic_number, atomic_weight from elements"):
            if 1 <= z <= MAX_Z:
                out[z] = w
    if not np.all(out[1:] > 0):
        raise ValueError("elements.db lacks an atomic weight for some Z ≤ 92")
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def ionization_energies() -> np.ndarray:
    """(93, 3) ionization energies in eV: χ(I→II), χ(II→III), χ(III→IV) (Barklem &
    Collet 2016). NaN where the stage does not exist (H II→III, H/He III→IV)."""
    out = np.full((N_Z, 3), np.nan)
    path = physics_dir() / "atomic" / "korg" / "BarklemCollet2016-ionization_energies.dat"
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tok = line.split()
        z = int(tok[0])
        if 1 <= z <= MAX_Z:
            vals = np.array([float(t) for t in tok[2:5]])
            out[z] = np.where(vals < 0, np.nan, vals)  # the file writes −1 for "none"
    if np.isnan(out[1:, 0]).any():
        raise ValueError("ionization-energy table incomplete")
    out.setflags(write=False)
    return out


# ---------------------------------------------------------------------------------------
# torch evaluation of tabulated cubic splines in ln T
# ---------------------------------------------------------------------------------------
class TorchSpline:
    """A cubic spline y(x) of many columns on one grid, evaluated in torch.

    ``x`` (n,), ``y`` (n, S). Built with scipy (not-a-knot), evaluated piecewise as
    c0 dx³ + c1 dx² + c2 dx + c3, so derivatives w.r.t. the query flow by autograd.
    Outside [x0, x_{n−1}] the spline continues linearly with its end slope."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        cs = CubicSpline(x, y, axis=0)
        self.x = x
        self.n_cols = y.shape[1]
        # (n−1, 4, S): coefficients per interval, highest power first
        self.c = np.ascontiguousarray(np.moveaxis(cs.c, 0, 1))
        self.y_end = np.stack([cs(x[0]), cs(x[-1])])          # (2, S)
        self.dy_end = np.stack([cs(x[0], 1), cs(x[-1], 1)])   # (2, S)
        self._cache: dict = {}

    def _tensors(self, dtype, device):
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = tuple(torch.as_tensor(a, dtype=dtype, device=device) for a in
                                     (self.x, self.c, self.y_end, self.dy_end))
        return self._cache[key]

    def __call__(self, xq: torch.Tensor) -> torch.Tensor:
        """Values at ``xq`` (...,) → (..., S)."""
        x, c, y_end, dy_end = self._tensors(xq.dtype, xq.device)
        xc = xq.clamp(x[0], x[-1])
        idx = torch.searchsorted(x, xc.detach().contiguous(), right=True) - 1
        idx = idx.clamp(0, x.shape[0] - 2)
        dx = (xc - x[idx]).unsqueeze(-1)
        cc = c[idx]                                           # (..., 4, S)
        val = ((cc[..., 0, :] * dx + cc[..., 1, :]) * dx + cc[..., 2, :]) * dx + cc[..., 3, :]
        # linear continuation beyond the ends (zero inside the range)
        below = (xq - x[0]).clamp(max=0).unsqueeze(-1)
        above = (xq - x[-1]).clamp(min=0).unsqueeze(-1)
        return val + below * dy_end[0] + above * dy_end[1]


# ---------------------------------------------------------------------------------------
# atomic partition functions
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _atomic_U_spline() -> TorchSpline:
    path = physics_dir() / "atomic" / "korg" / "partition_funcs.h5"
    with h5py.File(path, "r") as f:
        lo, step, hi = (float(f[k][()]) for k in ("logT_min", "logT_step", "logT_max"))
        lnT = lo + step * np.arange(int(round((hi - lo) / step)) + 1)
        table = np.ones((lnT.size, N_Z, 3))   # bare nuclei (H II, He III) and Z = 0: U = 1
        for z in range(1, N_Z):
            for q in range(3):
                key = f"{ELEMENT_SYMBOLS[z]} {ROMAN[q]}"
                if key in f:
                    table[:, z, q] = f[key][:]
                elif not ((z == 1 and q >= 1) or (z == 2 and q == 2)):
                    raise KeyError(f"{key} missing from {path}")
    if not np.isclose(lnT[-1], hi):
        raise ValueError("partition_funcs.h5: logT grid inconsistent")
    return TorchSpline(lnT, table.reshape(lnT.size, N_Z * 3))


def atomic_partition_table(T: torch.Tensor) -> torch.Tensor:
    """Partition functions of X I, X II, X III for Z = 0…92 at temperatures ``T`` (K).

    ``T`` (...,) → (..., 93, 3), dtype/device of T (float64 recommended). Row Z = 0 and
    the bare nuclei (H II, H III, He III) are 1. Cubic spline in ln T of the Korg/NIST
    table (module docstring); differentiable in T."""
    T = torch.as_tensor(T)
    if not T.is_floating_point():
        T = T.to(torch.float64)
    return _atomic_U_spline()(torch.log(T)).reshape(*T.shape, N_Z, 3)


def partition_function(species, T) -> torch.Tensor:
    """U(T) of one species: an atom ('Fe I', 'Ca II', (26, 0), 26 = neutral) or a
    molecule ('CO', 'TiO', 'H2'). ``T`` in K (tensor or number) → tensor of T's shape."""
    T = torch.as_tensor(T, dtype=torch.float64) if not torch.is_tensor(T) else T
    try:
        Z, q = parse_species(species)
    except ValueError:
        return molecular_partition_function(species, T)
    if q > 2:
        raise ValueError(f"no partition function beyond stage III ({species!r})")
    return atomic_partition_table(T)[..., Z, q]


# ---------------------------------------------------------------------------------------
# molecules
# ---------------------------------------------------------------------------------------
_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")


def _composition(formula: str) -> tuple[int, ...]:
    """Sorted atomic numbers of a neutral molecule's atoms: 'TiO' → (8, 22), 'H2' → (1, 1)."""
    if not formula or _TOKEN.sub("", formula):
        raise ValueError(f"cannot parse molecule {formula!r}")
    zs: list[int] = []
    for sym, num in _TOKEN.findall(formula):
        zs += [atomic_number(sym)] * (int(num) if num else 1)
    if len(zs) < 2:
        raise ValueError(f"{formula!r} is not a molecule")
    return tuple(sorted(zs))


@dataclass(frozen=True)
class Molecule:
    """A neutral molecule: ``name`` as written in spectroscopy ('TiO'), ``atoms`` the
    sorted atomic numbers ((8, 22)), ``mass`` in amu (sum of the atoms' weights)."""
    name: str
    atoms: tuple[int, ...]
    mass: float

    @property
    def n_atoms(self) -> int:
        return len(self.atoms)


def molecule(name: str) -> Molecule:
    """The :class:`Molecule` of a formula ('CO', 'H2', 'OTi' all work)."""
    atoms = _composition(name)
    return Molecule(name=_canonical_name(name, atoms), atoms=atoms,
                    mass=float(sum(atomic_masses()[z] for z in atoms)))


def _canonical_name(name: str, atoms: tuple[int, ...]) -> str:
    # keep the spectroscopist's spelling when given ("TiO", "MgH"); B&C file keys are
    # Z-ordered ("OTi"), which we map back through the molecular partition table's names
    names = _mol_names_by_composition()
    return names.get(atoms, name)


@lru_cache(maxsize=1)
def _mol_U_raw() -> tuple[np.ndarray, dict]:
    """(T grid (42,), {composition: (name, U values)}) of neutral molecules."""
    path = physics_dir() / "atomic" / "korg" / "BarklemCollet2016-molecular_partition.dat"
    temps = None
    rows: dict = {}
    for line in path.read_text().splitlines():
        if "T [K]" in line:
            temps = np.array([float(t) for t in line.split("]", 1)[1].split()])
            continue
        if not line.strip() or line.startswith("#"):
            continue
        tok = line.split()
        name = tok[0]
        if name.startswith("D_") or name[-1] in "+-":  # deuterides and molecular ions: not used
            continue
        rows[_composition(name)] = (name, np.array([float(t) for t in tok[1:]]))
    if temps is None:
        raise ValueError(f"{path}: no temperature header")
    return temps, rows


@lru_cache(maxsize=1)
def _mol_names_by_composition() -> dict:
    _, rows = _mol_U_raw()
    return {comp: name for comp, (name, _) in rows.items()}


@lru_cache(maxsize=1)
def _mol_K_raw() -> dict:
    """{composition: (lnT (n,), log10 K_p cgs (n,))} of neutral molecules (C₂ corrected)."""
    path = physics_dir() / "atomic" / "korg" / "barklem_collet_ks.h5"
    with h5py.File(path, "r") as f:
        mols = [m.decode() if isinstance(m, bytes) else str(m) for m in f["mols"][:]]
        lnTs = np.asarray(f["lnTs"][:], float)
        logKs = np.asarray(f["logKs"][:], float)
    if lnTs.shape[1] != len(mols):       # stored as (temperatures, molecules)
        lnTs, logKs = lnTs.T, logKs.T
    out = {}
    for j, name in enumerate(mols):
        if name[-1] in "+-":
            continue
        comp = _composition(name)
        lnT, logK = lnTs[:, j].copy(), logKs[:, j].copy()
        if comp == (6, 6):
            # C2: Visser et al. 2019 dissociation energy D0 = 6.24 eV instead of B&C's 6.371
            # eV (recommended by Aquilina et al. 2024). K_p ∝ exp(−D0/kT), so a smaller D0
            # raises log10 K_p by (6.371 − 6.24) log10(e)/kT (fewer C2). NB: Korg.jl adds
            # the opposite sign, which would make D0 = 6.50 eV; the sign used here is the
            # one that reproduces K_p from D0 = 6.24 eV through the Saha-like formula
            # (tests/test_atomic_data.py checks both H2 and C2 that way).
            logK += np.log10(np.e) / (k_B_eV * np.exp(lnT)) * (C2_D0_BARKLEM_COLLET - C2_D0_VISSER)
        out[comp] = (lnT, logK)
    return out


def available_molecules() -> list[str]:
    """Neutral molecules with both an equilibrium constant and a partition function."""
    Ks = _mol_K_raw()
    names = _mol_names_by_composition()
    return sorted(names[c] for c in Ks if c in names)


_LNT_MIN_MOL = np.log(100.0)
#: C2 dissociation energies (eV): Barklem & Collet 2016's table value and Visser et al.
#: 2019's, which we adopt (see ``_mol_K_raw``)
C2_D0_BARKLEM_COLLET = 6.371
C2_D0_VISSER = 6.24


@lru_cache(maxsize=64)
def molecular_tables(names: tuple[str, ...]) -> tuple[tuple[Molecule, ...], TorchSpline,
                                                       TorchSpline]:
    """(molecules, spline of log10 K_p(ln T), spline of U(ln T)) for the given names, the
    columns in the order of ``names``. K_p in dyn cm⁻² to the power n_atoms − 1."""
    mols = tuple(molecule(n) for n in names)
    Ks = _mol_K_raw()
    temps, Urows = _mol_U_raw()
    lnT_K = None
    logK_cols, U_cols = [], []
    for m in mols:
        if m.atoms not in Ks or m.atoms not in Urows:
            raise KeyError(f"no Barklem & Collet data for molecule {m.name!r}")
        lnT, logK = Ks[m.atoms]
        if lnT_K is None:
            lnT_K = lnT
        elif not np.allclose(lnT, lnT_K):
            raise ValueError("molecular equilibrium constants on different grids")
        logK_cols.append(logK)
        U_cols.append(Urows[m.atoms][1])
    keep = np.isfinite(lnT_K) & (lnT_K >= _LNT_MIN_MOL)
    lnT_U = np.log(temps)
    keepU = lnT_U >= _LNT_MIN_MOL
    K_spline = TorchSpline(lnT_K[keep], np.stack(logK_cols, axis=1)[keep])
    U_spline = TorchSpline(lnT_U[keepU], np.stack(U_cols, axis=1)[keepU])
    return mols, K_spline, U_spline


def log10_equilibrium_constant(name: str, T) -> torch.Tensor:
    """log10 K_p(T) = log10[p(A) p(B)… / p(AB…)] in cgs (dyn cm⁻²)^(n−1), neutral atoms."""
    T = torch.as_tensor(T, dtype=torch.float64) if not torch.is_tensor(T) else T
    _, K, _ = molecular_tables((molecule(name).name,))
    return K(torch.log(T))[..., 0]


def molecular_partition_function(name: str, T) -> torch.Tensor:
    """U(T) of a neutral molecule (Barklem & Collet 2016, no nuclear-spin factor)."""
    T = torch.as_tensor(T, dtype=torch.float64) if not torch.is_tensor(T) else T
    _, _, U = molecular_tables((molecule(name).name,))
    return U(torch.log(T))[..., 0]
