"""Fits running at once share each emulator call (``fitting.shared_emulator``; ``fit-batch --group``).

The merging is checked with the TEST DOUBLE (``fitting_double``: rows independent, cheap)
and with the shipped emulator (a merged call equals the separate ones to float rounding)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fitting_double import TRUTHS, LineDouble, noisy_spectrum

from phdlspec_app import labels as L
from phdlspec_app.cli import main
from phdlspec_app.fitting.shared_emulator import SharedEmulator

torch.set_num_threads(1)
FIX = {lab.name: 0.0 for lab in L.abundance_labels() if lab.name not in ("fe_h", "mg_fe")}


class _Counting:
    """The double, counting its calls and refusing rows with Teff < 0 (a caller's bad input)."""

    def __init__(self):
        self.inner = LineDouble()
        self.wavelength = self.inner.wavelength
        self.sizes = []      # the calls that succeeded, rows each
        self.attempts = []   # every call, rows each

    def __call__(self, labels):
        x = np.asarray(labels, float)
        self.attempts.append(np.atleast_2d(x).shape[0])
        if np.any(np.atleast_2d(x)[:, 0] < 0):
            raise ValueError("negative Teff")
        self.sizes.append(np.atleast_2d(x).shape[0])
        return self.inner(labels)


def _run_threads(target, args_list, timeout=120):
    """Run ``target(*args)`` in daemon threads; a thread still blocked after ``timeout``
    fails the test (a deadlock must not hang the suite)."""
    threads = [threading.Thread(target=target, args=a, daemon=True) for a in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a caller is still blocked on the shared emulator"


def _labels(rng, n):
    return np.array([L.to_vector({"teff": t, "logg": 4.0, "fe_h": f})
                     for t, f in zip(rng.uniform(4500, 6500, n), rng.uniform(-1, 0.3, n), strict=True)])


def test_concurrent_sessions_get_their_own_rows_from_merged_calls():
    """Four fits' threads, five rounds of requests of different sizes: each round is one
    emulator call, and every caller gets exactly the rows it would get alone."""
    emu = _Counting()
    shared = SharedEmulator(emu, linger=2.0)   # long linger: a round waits for all four
    rng = np.random.default_rng(1)
    asks = [[_labels(rng, 1 + (i + k) % 3) for k in range(5)] for i in range(4)]
    got = [[None] * 5 for _ in range(4)]
    opened = threading.Barrier(4)

    def fit(i):
        with shared.session():
            opened.wait(timeout=30)   # all four fits running before the first request
            for k in range(5):
                got[i][k] = shared(asks[i][k])

    _run_threads(fit, [(i,) for i in range(4)])
    assert shared.requests == 20
    assert shared.calls == 5, emu.sizes           # one merged call per round
    assert sorted(emu.sizes) == sorted(sum(len(asks[i][k]) for i in range(4)) for k in range(5))
    alone = LineDouble()
    for i in range(4):
        for k in range(5):
            np.testing.assert_allclose(got[i][k], alone(asks[i][k]), rtol=0, atol=1e-12)


def test_a_caller_outside_a_session_is_served_at_once_and_shapes_are_kept():
    shared = SharedEmulator(LineDouble(), linger=30.0)
    x = L.to_vector({"teff": 5000})
    t = time.perf_counter()
    one = shared(x)
    assert time.perf_counter() - t < 5.0        # no session open: it does not wait for one
    assert one.shape == (shared.wavelength.size,)
    assert shared([x, x]).shape == (2, shared.wavelength.size)
    with pytest.raises(ValueError, match=r"shape \(N, 32\)"):
        shared(np.zeros((2, 5)))


def test_the_dispatcher_thread_ends_when_idle_and_restarts():
    """A finished batch leaves no thread behind; the next request starts one again."""
    shared = SharedEmulator(LineDouble(), idle=0.1)
    x = L.to_vector({"teff": 5000})
    with shared.session():
        shared(x)
        first = shared._thread
        time.sleep(0.4)                         # a fit open: the dispatcher stays
        assert first.is_alive()
    first.join(timeout=5)
    assert not first.is_alive() and shared._thread is None
    np.testing.assert_array_equal(shared(x), LineDouble()(x))
    assert shared._thread is not first and shared.calls == 2


def test_torch_calls_pass_through_with_their_gradient():
    shared = SharedEmulator(LineDouble())
    x = torch.tensor(L.to_vector({"teff": 5000})[None], requires_grad=True)
    f = shared(x)
    assert isinstance(f, torch.Tensor) and f.requires_grad
    f.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert shared.calls == 0                     # autograd paths run alone
    np.testing.assert_array_equal(shared.jacobian(x.detach().numpy()), LineDouble().jacobian(x.detach().numpy()))


def test_one_callers_bad_rows_fail_only_that_caller():
    emu = _Counting()
    shared = SharedEmulator(emu, linger=2.0)
    good, bad = L.to_vector({"teff": 5000}), L.to_vector({"teff": 5000})
    bad[0] = -1.0
    out = {}
    opened = threading.Barrier(2)

    def call(name, x):
        with shared.session():
            opened.wait(timeout=30)
            try:
                out[name] = shared(x)
            except ValueError as exc:
                out[name] = exc

    _run_threads(call, [("good", good), ("bad", bad)])
    assert emu.attempts[0] == 2                  # the two were merged, and the merged call failed
    assert isinstance(out["bad"], ValueError) and "negative Teff" in str(out["bad"])
    np.testing.assert_allclose(out["good"], LineDouble()(good), atol=1e-12)


def test_the_shipped_emulator_merged_equals_separate():
    """Batch rounding only: a merged call of 3 + 17 spectra against the two calls alone."""
    from phdlspec_app.emulator import load_emulator

    emu = load_emulator(device="cpu")
    rng = np.random.default_rng(3)
    a, b = _labels(rng, 3), _labels(rng, 17)
    shared = SharedEmulator(emu, linger=2.0)
    out = {}
    opened = threading.Barrier(2)

    def call(name, x):
        with shared.session():
            opened.wait(timeout=30)
            out[name] = shared(x)

    _run_threads(call, [("a", a), ("b", b)])
    assert shared.calls == 1
    np.testing.assert_allclose(out["a"], emu(a), rtol=0, atol=2e-6)
    np.testing.assert_allclose(out["b"], emu(b), rtol=0, atol=2e-6)


def test_fits_in_threads_sharing_the_emulator_match_fits_alone():
    """Three fits at once in threads on one SharedEmulator: the same labels as each fit
    alone, with fewer emulator calls."""
    from phdlspec_app.fitting import fit_spectrum

    emu = LineDouble()
    specs = [noisy_spectrum(emu, t, 60, seed=i) for i, t in enumerate(TRUTHS[:3])]
    opts = {"fix": FIX, "cmaes_evals": 300, "seed": 2}
    alone = [fit_spectrum(s, emu, **opts) for s in specs]
    shared = SharedEmulator(LineDouble(), linger=0.05)
    together = [None] * 3

    def fit(i):
        with shared.session():
            together[i] = fit_spectrum(specs[i], shared, **opts)

    _run_threads(fit, [(i,) for i in range(3)], timeout=300)
    assert all(r is not None for r in together)
    assert shared.calls < shared.requests
    for a, b in zip(alone, together, strict=True):
        for name in ("teff", "logg", "fe_h", "mg_fe", "rv"):
            # the double's merged rows differ from lone ones by float rounding, which the
            # CMA-ES path carries on: agree to a twentieth of the error
            assert b.labels[name] == pytest.approx(a.labels[name], abs=0.05 * a.err_lo[name])


def test_fit_batch_groups_fits_on_each_worker(double_stars, tmp_path, monkeypatch):
    """``fit-batch --group 2`` on a 2-worker local cluster (2 threads each) runs and gives
    every star's row, with the labels of the ungrouped run (that calls merge is tested
    above, in one process); --group 0 is refused."""
    from phdlspec_app.fitting.output import read_results

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    d = double_stars[0].parent
    common = ["--emulator", "fitting_double:make_double", "--cmaes-evals", "300", "--device", "cpu",
              *[f"--fix={k}=0" for k in FIX]]
    assert main(["fit-batch", str(d), "-o", str(tmp_path / "g.ecsv"), "--group", "2", *common]) == 0
    assert main(["fit-batch", str(d), "-o", str(tmp_path / "one.ecsv"), "--group", "1", *common]) == 0
    grouped = {Path(r["file"]).name: r for r in read_results(tmp_path / "g.ecsv")}
    single = {Path(r["file"]).name: r for r in read_results(tmp_path / "one.ecsv")}
    assert sorted(grouped) == sorted(single) == [p.name for p in double_stars]
    for name, r in grouped.items():
        assert r["error"] == ""
        # merged calls round differently and CMA-ES carries that on: the same star's fit
        # to a twentieth of its error (the stars are ~600 K apart)
        for lab in ("teff", "logg", "fe_h"):
            assert r[lab] == pytest.approx(single[name][lab], abs=0.05 * single[name][f"{lab}_err"])
    assert main(["fit-batch", str(d), "-o", str(tmp_path / "x.ecsv"), "--group", "0", *common]) == 2
