"""Many fits, one emulator call: fits running at once in threads share each batched call.

Why: one fit calls the emulator with a few label vectors at a time (a CMA-ES population
of ~18, one χ², an RV template scan), and on a GPU such a call costs about what a call
of thousands does (kernel launches, not arithmetic, set its time). A worker that runs
several fits at once and merges their calls turns G small calls into one, so the fits
of a survey batch share the device instead of queueing for it (issue 5's ``fit-batch``
on a GPU). On 2 CPU cores the network is overhead-bound at small batches too; what it
buys there is measured in ``benchmarks/bench_batch.py``.

How: :class:`SharedEmulator` wraps an emulator and looks like it. Each fit thread enters
:meth:`SharedEmulator.session` for the length of its fit. A call with numpy labels — the
path of every batched χ² (CMA-ES populations, profile lines, the RV scan, the model
error's linearization) — is queued; a dispatcher thread runs everything queued as one
emulator call as soon as every open session is waiting on it, or ``linger`` seconds after
the first request if some fit is busy elsewhere, and hands each caller its rows. While
no session is open, every call is served at once. :meth:`SharedEmulator.jacobian` calls
with numpy labels (the Levenberg–Marquardt steps, the Fisher matrices) are merged the same
way, apart from flux calls. Calls with torch tensors (autograd: the likelihood's gradient,
which needs its own backward pass) go straight to the emulator.

Forward-mode autodiff (``torch.func.jacfwd``, the emulator's Jacobian) keeps its levels in
process-wide state: two threads taking Jacobians at once fail ("Trying to access a forward
AD level with an invalid index", seen with three fits in threads). The shipped emulator
serializes its own Jacobians (``emulator.model.FORWARD_AD_LOCK``, re-entrant); every
Jacobian here is taken under that same lock, so any other object with the emulator API is
covered too.

The emulator's rows are independent (each spectrum is its own set of tokens), so a
merged call gives each caller what it would have got alone, up to the float rounding
of a different batch size (≲ 1e-6 in flux for the default model: a grouped fit is
not bit-for-bit the ungrouped one with the same seed).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np

from .. import labels as L
from ..emulator.model import FORWARD_AD_LOCK

__all__ = ["SharedEmulator"]

_N_LABELS = len(L.label_names())
#: the most rows in one merged Jacobian call ((rows, 32, P) float64: 32 MB per 32 rows at P = 3909)
_MAX_JACOBIAN_ROWS = 32


class _Request:
    __slots__ = ("done", "error", "kind", "result", "x")

    def __init__(self, kind: str, x: np.ndarray):
        self.kind = kind
        self.x = x
        self.result = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class SharedEmulator:
    """An emulator whose numpy calls, made by fits running at once in threads, are merged.

    Parameters
    ----------
    emulator : any object with the emulator API (``__call__``, ``jacobian``, ``wavelength``, ...)
    linger : seconds the dispatcher waits for the other open sessions' requests once one
        has arrived (it goes at once when every open session is waiting)
    max_batch : the most label vectors in one merged call (larger calls are not split
        across callers: one request always runs whole)
    idle : seconds the dispatcher thread waits for work while no session is open before
        it ends (a later request starts another)

    Attributes ``calls`` and ``requests`` count the emulator calls made and the requests
    served (a merged call that failed is rerun request by request, each counted). Every
    other attribute is the wrapped emulator's.
    """

    def __init__(self, emulator, linger: float = 0.002, max_batch: int = 4096, idle: float = 1.0):
        self.emulator = emulator
        self.linger = float(linger)
        self.idle = float(idle)
        self.max_batch = int(max_batch)
        self.calls = 0
        self.requests = 0
        self._cv = threading.Condition()
        self._queue: list[_Request] = []
        self._sessions = 0
        self._thread: threading.Thread | None = None

    def __getattr__(self, name):
        # only reached for names this object lacks: the emulator's API (wavelength,
        # jacobian, in_domain, model_error, ...) passes through
        if name == "emulator":
            raise AttributeError(name)
        return getattr(self.emulator, name)

    @contextmanager
    def session(self):
        """Mark the calling thread's fit as running: the dispatcher waits (≤ ``linger``)
        for the requests of every open session before it calls the emulator."""
        with self._cv:
            self._sessions += 1
        try:
            yield self
        finally:
            with self._cv:
                self._sessions -= 1
                self._cv.notify_all()

    def __call__(self, labels):
        """Flux (N, P) or (P,) for labels (N, 32) or (32,), as the emulator's ``__call__``."""
        if not isinstance(labels, np.ndarray | list | tuple):
            return self.emulator(labels)        # torch: autograd paths run alone
        return self._submit("flux", labels)

    def jacobian(self, labels):
        """d flux / d label (N, 32, P) or (32, P), as the emulator's ``jacobian``."""
        if not isinstance(labels, np.ndarray | list | tuple):
            with FORWARD_AD_LOCK:
                return self.emulator.jacobian(labels)
        return self._submit("jacobian", labels)

    def _submit(self, kind: str, labels):
        x = np.asarray(labels, dtype=float)
        single = x.ndim == 1
        x2 = x[None] if single else x
        if x2.ndim != 2 or x2.shape[1] != _N_LABELS:
            raise ValueError(f"labels must have shape (N, {_N_LABELS}) or ({_N_LABELS},), got {x.shape}")
        req = _Request(kind, x2)
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._dispatch, name="shared-emulator", daemon=True)
                self._thread.start()
            self._queue.append(req)
            self._cv.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.result[0] if single else req.result

    def _run(self, kind: str, x: np.ndarray) -> np.ndarray:
        if kind == "jacobian":
            with FORWARD_AD_LOCK:
                return np.asarray(self.emulator.jacobian(x))
        return np.asarray(self.emulator(x))

    def _dispatch(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    # idle with no fit open: end, so a worker's finished batch (or a test)
                    # leaves no thread behind; the next request starts a new one
                    if (not self._cv.wait(self.idle) and not self._queue and self._sessions == 0):
                        self._thread = None
                        return
                t0 = time.monotonic()
                # every open session waiting (or none open): go; otherwise give the busy
                # ones ``linger`` seconds to join
                while (len(self._queue) < self._sessions
                       and sum(r.x.shape[0] for r in self._queue) < self.max_batch):
                    left = self.linger - (time.monotonic() - t0)
                    if left <= 0:
                        break
                    self._cv.wait(left)
                # the oldest request's kind, with every queued request of that kind that fits
                kind = self._queue[0].kind
                cap = self.max_batch if kind == "flux" else _MAX_JACOBIAN_ROWS
                batch, rows = [], 0
                for r in list(self._queue):
                    if r.kind == kind and (not batch or rows + r.x.shape[0] <= cap):
                        batch.append(r)
                        rows += r.x.shape[0]
                        self._queue.remove(r)
            try:
                out = self._run(kind, np.concatenate([r.x for r in batch]))
                if out.shape[0] != rows:
                    raise RuntimeError(f"the emulator returned {out.shape[0]} rows for {rows} label vectors")
                self.calls += 1
                self.requests += len(batch)
                s = 0
                for r in batch:
                    r.result = out[s:s + r.x.shape[0]]
                    s += r.x.shape[0]
            except BaseException as exc:  # noqa: BLE001 — handed to the callers, the dispatcher lives on
                # one caller's bad rows must not fail the others': rerun each alone
                for r in batch:
                    if len(batch) == 1:
                        r.error = exc
                        continue
                    try:
                        r.result = self._run(kind, r.x)
                        self.calls += 1
                        self.requests += 1
                    except BaseException as own:  # noqa: BLE001
                        r.error = own
            finally:
                for r in batch:   # never leave a caller waiting
                    if r.result is None and r.error is None:
                        r.error = RuntimeError("the shared emulator call ended without a result")
                    r.done.set()
