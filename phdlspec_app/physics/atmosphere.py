"""Model atmospheres: the differentiable atmosnet emulator and the Kurucz ATLAS9 grid.

``ModelAtmosphere`` holds the structure (column mass, temperature, gas pressure,
electron density per layer) that the EOS, the opacities and the radiative transfer use.

Two sources:

- **atmosnet** (default; Nidever, PyPI ``atmosnet`` 1.0.1, MIT): two multilayer
  perceptrons emulating C3K/ATLAS12 atmospheres (Kurucz 2005, Conroy et al.) from
  (Teff, logg, [Fe/H], [α/Fe]), 80 depths. Only the weights are used: the package's own
  code is broken (it exponentiates with base e and imports a removed SciPy function),
  so the forward pass is rewritten here in torch and is differentiable in all four
  inputs. The weight files are pickles written by ``dill``; they are read after a
  sha256 check with a restricted unpickler that can only rebuild numpy arrays.
- **kurucz** (cross-check): the Kurucz 1993 ATLAS9 "SDSC GRID" (vturb 2 km/s,
  mixing length 1.25, scaled-solar), trilinear interpolation in (Teff, logg, [M/H]) on
  a common Rosseland optical-depth scale. numpy; not differentiable.

Units: CGS (rhox g cm⁻², T K, P dyn cm⁻², ne cm⁻³, abross cm² g⁻¹, vturb cm s⁻¹).
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import pickle
import re
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from phdlspec_app.paths import physics_dir
from phdlspec_app.physics.constants import k_B

__all__ = [
    "ModelAtmosphere", "atmosnet_atmosphere", "atmosnet_domain", "kurucz_atmosphere", "read_krz",
    "read_atlas_models", "load_atmosphere", "rosseland_optical_depth", "read_weight_pickle",
    "restricted_loads", "salaris_m_h", "ChecksumError", "ATMOSNET_SHA256", "ATMOSNET_TEFF_SWITCH",
]


# --------------------------------------------------------------------------------------
# the dataclass
# --------------------------------------------------------------------------------------
@dataclass
class ModelAtmosphere:
    """A plane-parallel model atmosphere, layers ordered top (small rhox) to bottom.

    All arrays are float64 tensors of shape (..., L).

    rhox : column mass above each layer, g cm⁻²
    T : temperature, K
    P : gas pressure, dyn cm⁻²
    ne : electron number density, cm⁻³ (as given by the model; the EOS may recompute it)
    abross : Rosseland mean opacity, cm² g⁻¹ (optional)
    vturb : microturbulence of the model, cm s⁻¹ (optional)
    tau_ross : Rosseland optical depth (optional)
    source : where the model came from ("atmosnet:cool", "kurucz:ATLAS9", a file path …)
    """

    rhox: torch.Tensor
    T: torch.Tensor
    P: torch.Tensor
    ne: torch.Tensor
    abross: torch.Tensor | None = None
    vturb: torch.Tensor | None = None
    tau_ross: torch.Tensor | None = None
    source: str = ""

    @property
    def n_total(self) -> torch.Tensor:
        """Number density of heavy particles (atoms, ions, molecules), P/(kT) − ne, cm⁻³."""
        return self.P / (k_B * self.T) - self.ne

    @property
    def n_layers(self) -> int:
        return self.T.shape[-1]

    def to(self, device=None, dtype=None) -> "ModelAtmosphere":
        """A copy with every tensor moved to ``device`` (and cast to ``dtype`` if given)."""
        moved = {f.name: getattr(self, f.name).to(device=device, dtype=dtype)
                 for f in fields(self) if torch.is_tensor(getattr(self, f.name))}
        return replace(self, **moved)


def rosseland_optical_depth(rhox, abross):
    """τ_Ross(rhox) = ∫ κ_R d rhox, along the last axis (torch or numpy, (..., L)).

    Top boundary: the opacity above the first layer is taken equal to its value there,
    τ_1 = κ_R,1 · rhox_1 (the convention of ATLAS and of atmosnet's own code); deeper
    layers add trapezoids. For the solar atmosnet model this gives τ_1 ≈ 1.4e-7.
    """
    if torch.is_tensor(rhox):
        steps = 0.5 * (abross[..., 1:] + abross[..., :-1]) * torch.diff(rhox, dim=-1)
        top = abross[..., :1] * rhox[..., :1]
        return torch.cat([top, top + torch.cumsum(steps, dim=-1)], dim=-1)
    rhox, abross = np.asarray(rhox, float), np.asarray(abross, float)
    steps = 0.5 * (abross[..., 1:] + abross[..., :-1]) * np.diff(rhox, axis=-1)
    top = abross[..., :1] * rhox[..., :1]
    return np.concatenate([top, top + np.cumsum(steps, axis=-1)], axis=-1)


# --------------------------------------------------------------------------------------
# atmosnet: safe loading of the weight pickles
# --------------------------------------------------------------------------------------
#: sha256 of the weight files of atmosnet 1.0.1 (computed once from the PyPI wheel)
ATMOSNET_SHA256 = {
    "cool": "07a5258162bfb98deb2472b87646b1a84a55cf93994a009bf17c4178187c8618",
    "hot": "1dfdbd14058e7d9ee40d5bb2c9038545ef61456e7d55b9002a1014af14d3810a",
}
#: Teff (K) at which the hot network takes over. The networks' own ``ranges`` are
#: cool 2500–8000 K and hot 8000–50000 K; atmosnet picks the first range that holds
#: the Teff, so Teff ≤ 8000 K → cool, Teff > 8000 K → hot, as here.
ATMOSNET_TEFF_SWITCH = 8000.0

# Column order of the network outputs (Kurucz DECK6), each the log10 of the quantity
_COLUMNS = ("RHOX", "T", "P", "XNE", "ABROSS", "ACCRAD", "VTURB", "FLXCNV")
# atmosnet trained on log10(x + 1e-16) (its code subtracts 1e-16 after exponentiating)
_LOG_OFFSET = 1e-16
_LEAKY_SLOPE = 0.01


class ChecksumError(ValueError):
    """A weight file whose sha256 is not the one recorded for it."""


try:  # numpy ≥ 2 moved the private modules to numpy._core; either name may be in a pickle
    from numpy._core.multiarray import _reconstruct as _np_reconstruct, scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct as _np_reconstruct, scalar as _np_scalar

_NP_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray",
               "numpy.core._multiarray_umath", "numpy._core._multiarray_umath")
_ALLOWED = {(m, "_reconstruct"): _np_reconstruct for m in _NP_MODULES}
_ALLOWED.update({(m, "scalar"): _np_scalar for m in _NP_MODULES})
_ALLOWED.update({("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                 ("builtins", "dict"): dict, ("builtins", "list"): list,
                 ("builtins", "tuple"): tuple})


class _NumpyModule:
    """Stands for one of numpy's array modules inside a dill pickle (never a real module)."""

    def __init__(self, name: str):
        self.name = name


def _dill_import_module(name):
    # dill pickles `numpy.core._multiarray_umath._reconstruct` as
    # _get_attr(_import_module("numpy.core._multiarray_umath"), "_reconstruct");
    # these two stand-ins resolve exactly that and nothing else, without importing dill.
    if name not in _NP_MODULES:
        raise pickle.UnpicklingError(f"refusing to import module {name!r} from a weight file")
    return _NumpyModule(name)


def _dill_get_attr(obj, name):
    if not isinstance(obj, _NumpyModule) or (obj.name, name) not in _ALLOWED:
        raise pickle.UnpicklingError(f"refusing attribute {name!r} of {obj!r} in a weight file")
    return _ALLOWED[(obj.name, name)]


class _WeightUnpickler(pickle.Unpickler):
    """Rebuilds only numpy arrays, dtypes, scalars, dicts, lists and tuples."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) == ("dill._dill", "_import_module"):
            return _dill_import_module
        if (module, name) == ("dill._dill", "_get_attr"):
            return _dill_get_attr
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: weight files may only hold numpy arrays, "
            "dicts, lists and tuples")


def restricted_loads(data: bytes):
    """Unpickle ``data`` admitting only numpy arrays and plain containers (see
    :class:`_WeightUnpickler`); object arrays are refused too."""
    obj = _WeightUnpickler(io.BytesIO(data)).load()

    def check(o):
        if isinstance(o, np.ndarray) and o.dtype.hasobject:
            raise pickle.UnpicklingError("refusing an object array in a weight file")
        if isinstance(o, dict):
            for v in o.values():
                check(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                check(v)
    check(obj)
    return obj


def read_weight_pickle(path, sha256: str):
    """Read a pickled weight file after checking its sha256 (raises :class:`ChecksumError`)."""
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ChecksumError(f"{path}: sha256 {digest} is not the expected {sha256}; "
                            "refusing to unpickle an unknown file")
    return restricted_loads(data)


def _atmosnet_file(kind: str) -> Path:
    # find_spec locates the package without executing its (broken) __init__/modules
    spec = importlib.util.find_spec("atmosnet")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the atmosnet package (pip install atmosnet==1.0.1) is not "
                                  "installed; its weight files provide the default atmospheres")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / f"atmosnet_c3k_300neurons_{kind}.pkl"


@lru_cache(maxsize=None)
def _atmosnet_numpy(kind: str) -> dict[str, np.ndarray]:
    """The 8 per-column networks of one atmosnet file stacked: W0 (8,300,4), W1 (8,300,300),
    W2 (8,80,300), b0, b1, b2, x_min, x_max (4,), ranges (4,2), and the training-grid
    envelope (per Teff node the min/max of logg, [Fe/H], [α/Fe])."""
    nets = read_weight_pickle(_atmosnet_file(kind), ATMOSNET_SHA256[kind])
    if len(nets) != len(_COLUMNS) or [int(n["column"]) for n in nets] != list(range(len(_COLUMNS))):
        raise ValueError(f"atmosnet {kind}: expected 8 column networks in DECK6 order")
    out = {}
    for key, src in (("W0", "w_array_0"), ("W1", "w_array_1"), ("W2", "w_array_2"),
                     ("b0", "b_array_0"), ("b1", "b_array_1"), ("b2", "b_array_2")):
        out[key] = np.stack([np.asarray(n[src], dtype=np.float64) for n in nets])
    out["x_min"] = np.asarray(nets[0]["x_min"], float)
    out["x_max"] = np.asarray(nets[0]["x_max"], float)
    out["ranges"] = np.asarray(nets[0]["ranges"], float)
    train = np.asarray(nets[0]["training_labels"], float)
    nodes = np.unique(train[:, 0])
    out["env_teff"] = nodes
    out["env_lo"] = np.array([train[train[:, 0] == t, 1:].min(axis=0) for t in nodes])
    out["env_hi"] = np.array([train[train[:, 0] == t, 1:].max(axis=0) for t in nodes])
    return out


@lru_cache(maxsize=8)
def _atmosnet_torch(kind: str, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in _atmosnet_numpy(kind).items()}


def _inside(net: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """True where labels x (..., 4) lie inside the network's label box and inside the
    envelope of its training grid: between two Teff nodes, logg/[Fe/H]/[α/Fe] must lie in
    the range both nodes were trained on (the grid is not rectangular: e.g. no logg < 1
    at 5250 K)."""
    lo_box, hi_box = net["ranges"][:, 0], net["ranges"][:, 1]
    ok = ((x >= lo_box) & (x <= hi_box)).all(dim=-1)
    nodes = net["env_teff"]
    t = x[..., 0].contiguous()
    i_hi = torch.searchsorted(nodes, t).clamp(0, len(nodes) - 1)
    i_lo = torch.where(nodes[i_hi] == t, i_hi, (i_hi - 1).clamp(min=0))
    lo = torch.maximum(net["env_lo"][i_lo], net["env_lo"][i_hi])
    hi = torch.minimum(net["env_hi"][i_lo], net["env_hi"][i_hi])
    return ok & ((x[..., 1:] >= lo) & (x[..., 1:] <= hi)).all(dim=-1)


def _forward(net: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The 8 networks on labels x (..., 4) → log10 outputs (..., 8, 80)."""
    z = (x - net["x_min"]) / (net["x_max"] - net["x_min"]) - 0.5
    act = torch.nn.functional.leaky_relu
    h = act(torch.einsum("cij,...j->...ci", net["W0"], z) + net["b0"], _LEAKY_SLOPE)
    h = act(torch.einsum("cij,...cj->...ci", net["W1"], h) + net["b1"], _LEAKY_SLOPE)
    return torch.einsum("cij,...cj->...ci", net["W2"], h) + net["b2"]


def atmosnet_domain(kind: str = "cool") -> dict[str, np.ndarray]:
    """The label box (``ranges``, rows Teff, logg, [Fe/H], [α/Fe]) and training-grid
    envelope of one atmosnet network (``env_teff``, ``env_lo``, ``env_hi``)."""
    net = _atmosnet_numpy(kind)
    return {k: net[k].copy() for k in ("ranges", "env_teff", "env_lo", "env_hi")}


def atmosnet_atmosphere(teff, logg, fe_h, alpha_fe=0.0) -> ModelAtmosphere:
    """C3K/ATLAS12 atmosphere from the atmosnet networks, differentiable in all inputs.

    Parameters are floats or tensors broadcastable to a common batch shape (...):
    teff (K), logg (cgs dex), fe_h ([Fe/H], dex), alpha_fe ([α/Fe], dex).
    Returns 80 layers with rhox, T, P, ne, abross and tau_ross (:func:`rosseland_optical_depth`);
    ``vturb`` is None: the C3K models carry none (the network outputs ~1e-16 with
    meaningless values in the deepest layers). Device follows the tensor inputs; float64.

    Teff ≤ 8000 K uses the cool network, above it the hot one (``ATMOSNET_TEFF_SWITCH``).
    Raises ValueError outside the training domain (:func:`atmosnet_domain`).
    Solar check (5777/4.44/0/0): top T 3691 K; at the layer nearest τ_Ross = 1
    T 6244 K, P 1.11e5 dyn cm⁻², ne 4.71e13 cm⁻³.
    """
    args = [teff, logg, fe_h, alpha_fe]
    device = next((a.device for a in args if torch.is_tensor(a)), torch.device("cpu"))
    args = [a.to(device=device, dtype=torch.float64) if torch.is_tensor(a)
            else torch.tensor(float(a), dtype=torch.float64, device=device) for a in args]
    x = torch.stack(torch.broadcast_tensors(*args), dim=-1)           # (..., 4)

    cool = _atmosnet_torch("cool", str(device), torch.float64)
    hot = _atmosnet_torch("hot", str(device), torch.float64)
    use_hot = x[..., 0] > ATMOSNET_TEFF_SWITCH
    xd = x.detach()
    inside = torch.where(use_hot, _inside(hot, xd), _inside(cool, xd))
    if not bool(inside.all()):
        bad = xd[~inside][0].tolist()
        raise ValueError(
            f"(Teff, logg, [Fe/H], [α/Fe]) = {tuple(round(v, 3) for v in bad)} is outside the atmosnet "
            "training domain (cool: Teff 2500–8000 K, hot: 8000–50000 K, logg −1…5.5 narrowing with "
            "Teff, [Fe/H] −4…+1.5, [α/Fe] −0.2…+0.6; see atmosnet_domain())")

    n_hot = int(use_hot.sum())
    if n_hot == 0:
        out = _forward(cool, x)
    elif n_hot == use_hot.numel():
        out = _forward(hot, x)
    else:
        out = torch.where(use_hot[..., None, None], _forward(hot, x), _forward(cool, x))
    val = torch.pow(10.0, out) - _LOG_OFFSET                          # (..., 8, 80)
    rhox, T, P, ne, abross = (val[..., i, :] for i in range(5))
    # Near the edges of its training envelope (hot subgiants: Teff ≳ 6600 K at log g
    # 3.4–3.9) the network returns a column mass that turns back with depth in its last
    # few layers (from layer 75 of 80, at τ_Ross ≈ 220). Layers that deep do not reach
    # the emergent flux (e^-220), so the model is cut at the last monotonic layer when
    # τ_Ross there is ≥ TAU_CUT_MIN; a structure that turns back higher up is refused
    # (found by the training grid: the optical depth ran backwards and the flux was NaN).
    ok = torch.diff(rhox.detach(), dim=-1) > 0                          # (..., L-1)
    if not bool(ok.all()):
        first_bad = torch.where(ok.all(dim=-1), torch.full(ok.shape[:-1], ok.shape[-1], device=ok.device),
                                (~ok).int().argmax(dim=-1))            # last good layer index
        keep = int(first_bad.min()) + 1
        tau_keep = rosseland_optical_depth(rhox[..., :keep], abross[..., :keep]).detach()[..., -1]
        if keep < 2 or not bool((tau_keep >= TAU_CUT_MIN).all()):
            bad = xd.reshape(-1, xd.shape[-1])[(tau_keep < TAU_CUT_MIN).reshape(-1)][0].tolist()
            raise ValueError(
                f"(Teff, logg, [Fe/H], [α/Fe]) = {tuple(round(v, 3) for v in bad)}: the atmosnet structure "
                f"is not monotonic in column mass (RHOX) above τ_Ross = {TAU_CUT_MIN:g} — outside the "
                "network's reliable domain; use source='kurucz' or other labels")
        rhox, T, P, ne, abross = (a[..., :keep] for a in (rhox, T, P, ne, abross))
    kind = "hot" if n_hot == use_hot.numel() else "cool" if n_hot == 0 else "cool+hot"
    return ModelAtmosphere(rhox=rhox, T=T, P=P, ne=ne, abross=abross, vturb=None,
                           tau_ross=rosseland_optical_depth(rhox, abross),
                           source=f"atmosnet:{kind}")


# --------------------------------------------------------------------------------------
# Kurucz ATLAS text models (.dat grid files, .krz)
# --------------------------------------------------------------------------------------
# Lenient patterns: a lost Fortran carriage-control character turns "TEFF" into "EFF"
# and "READ DECK6" into "EAD DECK6"; numbers may touch ("1.0E+00-2.0E-01").
_HEAD = re.compile(r"T?EFF\s+([-+0-9.Ee]+)\s+GRAVITY\s+([-+0-9.Ee]+)")
_DECK = re.compile(r"DECK6\s+(\d+)")
_NUM = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[EeDd][-+]?\d+)?")


def read_atlas_models(text: str) -> list[tuple[float, float, np.ndarray]]:
    """Every model in an ATLAS/Kurucz text (one or many models): a list of
    (Teff, logg, array (L, 7) of RHOX, T, P, XNE, ABROSS, ACCRAD, VTURB)."""
    lines = text.splitlines()
    models, head, i = [], None, 0
    while i < len(lines):
        m = _HEAD.search(lines[i])
        if m:
            head = (float(m.group(1)), float(m.group(2)))
        d = _DECK.search(lines[i])
        if d:
            if head is None:
                raise ValueError(f"line {i + 1}: READ DECK6 before any TEFF/GRAVITY header")
            n = int(d.group(1))
            rows = [[float(v.replace("D", "E").replace("d", "e")) for v in _NUM.findall(s)]
                    for s in lines[i + 1:i + 1 + n]]
            if len(rows) != n or any(len(r) < 7 for r in rows):
                raise ValueError(f"model Teff {head[0]} logg {head[1]}: expected {n} layers of at "
                                 "least 7 numbers after READ DECK6")
            models.append((head[0], head[1], np.array([r[:7] for r in rows])))
            head, i = None, i + n
        i += 1
    return models


def _from_deck(deck: np.ndarray, source: str) -> ModelAtmosphere:
    t = torch.as_tensor(deck, dtype=torch.float64)
    rhox, abross = t[:, 0].contiguous(), t[:, 4].contiguous()
    return ModelAtmosphere(rhox=rhox, T=t[:, 1].contiguous(), P=t[:, 2].contiguous(),
                           ne=t[:, 3].contiguous(), abross=abross, vturb=t[:, 6].contiguous(),
                           tau_ross=rosseland_optical_depth(rhox, abross), source=source)


def read_krz(path) -> ModelAtmosphere:
    """The first model of a Kurucz/ATLAS text file (e.g. a Castelli ``.krz`` such as
    ``atmospheres/single_models/pysme_testatmo1_5750_4.5_0.0.krz``); tau_ross integrated
    from ABROSS (:func:`rosseland_optical_depth`)."""
    models = read_atlas_models(Path(path).read_text(errors="replace"))
    if not models:
        raise ValueError(f"{path}: no ATLAS model (TEFF … GRAVITY … / READ DECK6) found")
    return _from_deck(models[0][2], source=str(path))


@lru_cache(maxsize=None)
def _kurucz_files() -> dict[float, Path]:
    """[M/H] → grid file (a{m,p}XXk2.dat: 'm' negative, XX in tenths of a dex)."""
    files = {}
    for p in sorted((physics_dir() / "atmospheres" / "kurucz1993_sdsc_grid").glob("a[mp][0-9][0-9]k2.dat")):
        sign = -1.0 if p.name[1] == "m" else 1.0
        files[round(sign * int(p.name[2:4]) / 10, 2)] = p
    if not files:
        raise FileNotFoundError("no Kurucz grid files a{m,p}XXk2.dat in physics/atmospheres/kurucz1993_sdsc_grid")
    return files


@lru_cache(maxsize=None)
def _kurucz_grid(m_h: float) -> dict[tuple[float, float], np.ndarray]:
    """(Teff, logg) → deck (L, 7) for one [M/H] file; parsed once (~0.3 s per file)."""
    text = _kurucz_files()[m_h].read_text(errors="replace")
    return {(t, g): deck for t, g, deck in read_atlas_models(text)}


def _bracket(value: float, nodes, what: str) -> list[tuple[float, float]]:
    """[(node, weight)] for linear interpolation; a single node when value sits on one."""
    nodes = np.unique(np.asarray(list(nodes), float))
    if not nodes[0] - 1e-9 <= value <= nodes[-1] + 1e-9:
        raise ValueError(f"{what} = {value} is outside the Kurucz grid ({nodes[0]} … {nodes[-1]})")
    hit = np.flatnonzero(np.abs(nodes - value) < 1e-9)
    if hit.size:
        return [(float(nodes[hit[0]]), 1.0)]
    j = int(np.searchsorted(nodes, value))
    lo, hi = nodes[j - 1], nodes[j]
    f = (value - lo) / (hi - lo)
    return [(float(lo), 1.0 - f), (float(hi), f)]


def kurucz_atmosphere(teff: float, logg: float, m_h: float) -> ModelAtmosphere:
    """ATLAS9 (Kurucz 1993 SDSC grid) atmosphere by trilinear interpolation.

    teff (K), logg (cgs dex), m_h ([M/H], scaled solar, dex). Nodes: [M/H] −5 … +1 (19
    values), Teff steps of 250 K below 10000 K, logg steps of 0.5. Each corner model is put
    on log τ_Ross (:func:`rosseland_optical_depth`); T, log P, log ne, log rhox, log abross
    and vturb are interpolated in log τ_Ross onto the τ scale of the corner of largest
    weight, restricted to the τ range every corner covers, then blended trilinearly. On a
    grid node this returns the node's own layers unchanged. ``tau_ross`` is that common
    scale. Raises ValueError outside the grid or when a needed corner model is absent
    (e.g. logg 0 at Teff ≥ 6250 K).
    """
    teff, logg, m_h = float(teff), float(logg), float(m_h)
    w_m = _bracket(m_h, _kurucz_files().keys(), "[M/H]")
    grids = {m: _kurucz_grid(m) for m, _ in w_m}
    all_nodes = set().union(*[set(g) for g in grids.values()])
    w_t = _bracket(teff, {t for t, _ in all_nodes}, "Teff")
    # log g nodes of the bracketing Teff columns only: the grid has a few off-step hot models
    # (25000 K at log g 3.3, 24000 K at 3.9) that must not split the 0.5-dex steps of cool stars
    teffs = {t for t, _ in w_t}
    w_g = _bracket(logg, {g for t, g in all_nodes if t in teffs}, "logg")

    corners, missing = [], []
    for m, wm in w_m:
        for t, wt in w_t:
            for g, wg in w_g:
                deck = grids[m].get((t, g))
                if deck is None:
                    missing.append(f"({t:.0f} K, {g}, {m:+.1f})")
                else:
                    corners.append((wm * wt * wg, deck))
    if missing:
        raise ValueError(f"Kurucz grid lacks the corner model(s) {', '.join(missing)} needed for "
                         f"Teff {teff}, logg {logg}, [M/H] {m_h}")

    logtau = [np.log10(rosseland_optical_depth(d[:, 0], d[:, 4])) for _, d in corners]
    base = logtau[int(np.argmax([w for w, _ in corners]))]
    lo, hi = max(lt[0] for lt in logtau), min(lt[-1] for lt in logtau)
    grid = base[(base >= lo - 1e-12) & (base <= hi + 1e-12)]
    # columns interpolated: log rhox, T, log P, log ne, log abross, vturb
    acc = np.zeros((6, grid.size))
    for (w, deck), lt in zip(corners, logtau):
        cols = (np.log10(deck[:, 0]), deck[:, 1], np.log10(deck[:, 2]), np.log10(deck[:, 3]),
                np.log10(deck[:, 4]), deck[:, 6])
        acc += w * np.array([np.interp(grid, lt, c) for c in cols])
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    return ModelAtmosphere(rhox=as_t(10 ** acc[0]), T=as_t(acc[1]), P=as_t(10 ** acc[2]),
                           ne=as_t(10 ** acc[3]), abross=as_t(10 ** acc[4]), vturb=as_t(acc[5]),
                           tau_ross=as_t(10 ** grid),
                           source=f"kurucz:ATLAS9 SDSC grid ({teff:g}, {logg:g}, {m_h:+g})")


def salaris_m_h(fe_h: float, alpha_fe: float) -> float:
    """[M/H] of a scaled-solar mixture equivalent to ([Fe/H], [α/Fe]) (Salaris, Chieffi &
    Straniero 1993, ApJ 414, 580): [M/H] = [Fe/H] + log10(0.638 · 10^[α/Fe] + 0.362)."""
    return float(fe_h) + math.log10(0.638 * 10 ** float(alpha_fe) + 0.362)


#: an atmosnet model whose column mass turns back below this Rosseland depth is cut there
TAU_CUT_MIN = 50.0
#: [α/Fe] range (dex) of atmosnet's training grid
ATMOSNET_ALPHA = (-0.2, 0.6)


def load_atmosphere(teff, logg, fe_h, alpha_fe=0.0, source: str = "atmosnet") -> ModelAtmosphere:
    """One entry point: ``source="atmosnet"`` (default, differentiable, α-aware) or
    ``"kurucz"`` (ATLAS9 grid, scaled solar: [α/Fe] ≠ 0 is folded into [M/H] with
    :func:`salaris_m_h`).

    The *structure* takes [α/Fe] clamped to atmosnet's training range (−0.2…+0.6):
    α-enhanced stars beyond +0.6 (reached when the Mg, Si and Ca labels are all high) get
    the +0.6 structure — the structure's response to [α/Fe] is small and saturating
    there — while the EOS and the line and continuum opacities use the full abundances."""
    if source == "atmosnet":
        alpha = torch.as_tensor(alpha_fe, dtype=torch.float64)
        return atmosnet_atmosphere(teff, logg, fe_h, torch.clamp(alpha, ATMOSNET_ALPHA[0], ATMOSNET_ALPHA[1]))
    if source == "kurucz":
        vals = [float(v) for v in (teff, logg, fe_h, alpha_fe)]
        m_h = vals[2] if vals[3] == 0.0 else salaris_m_h(vals[2], vals[3])
        return kurucz_atmosphere(vals[0], vals[1], m_h)
    raise ValueError(f"unknown atmosphere source {source!r}; use 'atmosnet' or 'kurucz'")
