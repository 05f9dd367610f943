"""Cross-check: atmosnet (C3K/ATLAS12 emulator) against the Kurucz ATLAS9 grid.

For a solar dwarf, a metal-poor giant and a metal-poor turn-off star, prints one JSON
object with T, P and ne of both sources at log τ_Ross = −3, −2, −1, 0, +1 and the
relative differences (atmosnet − Kurucz) / Kurucz. Both sources are sampled on their
own τ_Ross from the same integration (rosseland_optical_depth). [α/Fe] = 0.

Expect differences of a few per cent in T and P and ~10–20 % in ne: the 1993 ATLAS9
grid uses Anders & Grevesse (1989) abundances and approximate convective overshoot
(≈120 K hotter at τ_Ross = 1 than Castelli's NOVER models, which atmosnet follows).

    python benchmarks/compare_atmospheres.py
"""
from __future__ import annotations

import json
import re
import time

import numpy as np

from phdlspec_app.physics.atmosphere import atmosnet_atmosphere, kurucz_atmosphere

STARS = {
    "dwarf 5777/4.44/+0.0": (5777.0, 4.44, 0.0),
    "giant 4500/2.0/-0.3": (4500.0, 2.0, -0.3),
    "turnoff 6200/4.0/-1.5": (6200.0, 4.0, -1.5),
}
LOG_TAU = (-3.0, -2.0, -1.0, 0.0, 1.0)


def _at(atm, log_tau):
    lt = np.log10(atm.tau_ross.detach().numpy())
    # T linear, P and ne in log, all vs log τ_Ross
    return {"T": np.interp(log_tau, lt, atm.T.detach().numpy()),
            "P": 10 ** np.interp(log_tau, lt, np.log10(atm.P.detach().numpy())),
            "ne": 10 ** np.interp(log_tau, lt, np.log10(atm.ne.detach().numpy()))}


def main():
    out = {"log_tau_ross": list(LOG_TAU), "stars": {}}
    t0 = time.perf_counter()
    for name, (teff, logg, feh) in STARS.items():
        a = _at(atmosnet_atmosphere(teff, logg, feh, 0.0), np.array(LOG_TAU))
        k = _at(kurucz_atmosphere(teff, logg, feh), np.array(LOG_TAU))
        star = {}
        for q in ("T", "P", "ne"):
            star[q] = {"atmosnet": [float(f"{v:.4g}") for v in a[q]],
                       "kurucz": [float(f"{v:.4g}") for v in k[q]],
                       "rel_diff": [round(float(x), 4) for x in (a[q] - k[q]) / k[q]]}
        out["stars"][name] = star
    out["seconds"] = round(time.perf_counter() - t0, 2)
    text = json.dumps(out, indent=1)
    # one line per list of numbers, so the table reads at a glance
    print(re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text))


if __name__ == "__main__":
    main()
