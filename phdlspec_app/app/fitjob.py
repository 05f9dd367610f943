"""Background work for the dashboard: fits (:class:`FitJob`) and engine runs (:class:`Job`).

No Panel here (and no Bokeh): the worker thread only writes plain attributes of its job
(stage, fraction, chi2, result, error); each browser session polls its job from its own event
loop and updates its widgets there. Changing Bokeh models from a worker thread is exactly
what must not happen (Panel notes: ``_pending_writes`` RuntimeError).

The pool is process-wide and small (``PHDLSPEC_APP_FIT_WORKERS``, default 1 on machines with
up to 4 cores, else 2): a fit needs a core, and the live model of every session must stay
responsive. A job waiting for a worker says so (state ``queued``). ``cancel()`` sets the
event that ``fit_spectrum`` checks between evaluations, so a fit stops promptly, even queued.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

__all__ = ["FitJob", "Job", "fit_pool", "pool_size", "physics_pool"]

log = logging.getLogger(__name__)

_POOL: ThreadPoolExecutor | None = None
_PHYSICS_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool_size() -> int:
    env = os.environ.get("PHDLSPEC_APP_FIT_WORKERS")
    if env:
        return max(1, int(env))
    return 1 if (os.cpu_count() or 1) <= 4 else 2


def physics_pool() -> ThreadPoolExecutor:
    """One worker for the ab initio engine's "physics vs emulator" runs (process-wide)."""
    global _PHYSICS_POOL
    with _POOL_LOCK:
        if _PHYSICS_POOL is None:
            _PHYSICS_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phdlspec-physics")
        return _PHYSICS_POOL


def fit_pool() -> ThreadPoolExecutor:
    """The process-wide pool of fit workers (created on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=pool_size(), thread_name_prefix="phdlspec-fit")
        return _POOL


class Job:
    """One piece of background work run by a pool; read its attributes from any thread.

    ``work(job)`` does the work and returns the result; it may set ``job.stage``/``fraction``
    and should check ``job.cancel_event``. state : "queued", "running", "done", "failed" or
    "cancelled"; result : what ``work`` returned; error : why it failed.
    """

    def __init__(self, work=None):
        self._work = work
        self.cancel_event = threading.Event()
        self.state = "queued"
        self.stage, self.fraction, self.chi2 = "queued", 0.0, None
        self.result = None
        self.error = ""
        self.submitted = time.monotonic()
        self.started = self.finished = None
        self._done = threading.Event()
        self.future = None

    # ---- control (any thread) -------------------------------------------------------------
    def submit(self, pool: ThreadPoolExecutor | None = None):
        self.future = (pool or fit_pool()).submit(self._run)
        return self

    def cancel(self) -> None:
        """Ask the work to stop; it ends in state ``cancelled`` (at once when still queued)."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended; True when it did within ``timeout``."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    # ---- the worker ------------------------------------------------------------------------
    def work(self):
        return self._work(self)

    def _run(self) -> None:
        try:
            if self.cancel_event.is_set():
                self.state, self.stage = "cancelled", "cancelled"
                return
            self.state, self.started = "running", time.monotonic()
            self.result = self.work()
            self.state, self.stage, self.fraction = "done", "done", 1.0
        except Exception as exc:  # FitCancelled, FitInputError, anything: the server lives on
            if self.cancel_event.is_set():
                self.state, self.stage = "cancelled", "cancelled"
            else:
                self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, ValueError):
                    log.exception("background job failed")
        finally:
            self.finished = time.monotonic()
            self._done.set()


class FitJob(Job):
    """One fit of one spectrum (``fitting.fit_spectrum``, or ``fit``), run in the pool.

    stage, fraction : the fit's last progress report; chi2 : the current chi2 when the
    fitter reports one, else None; result : the :class:`~phdlspec_app.fitting.FitResult`.
    """

    def __init__(self, spectrum, emulator, method: str = "cmaes", fix=None, priors=None, seed: int = 0,
                 fit=None, **fit_kwargs):
        super().__init__()
        self.spectrum, self.emulator = spectrum, emulator
        self.method, self.fix, self.priors, self.seed = method, dict(fix or {}), dict(priors or {}), seed
        self.fit_kwargs = fit_kwargs
        self._fit = fit  # the fitting function (default: phdlspec_app.fitting.fit_spectrum)

    def _progress(self, stage, fraction=0.0, *extra, **info) -> None:
        self.stage, self.fraction = str(stage), float(fraction)
        chi2 = info.get("chi2", extra[0] if extra else None)
        if chi2 is not None:
            self.chi2 = float(chi2)

    def work(self):
        fit = self._fit
        if fit is None:
            from phdlspec_app.fitting import fit_spectrum as fit
        result = fit(self.spectrum, self.emulator, method=self.method, fix=self.fix or None,
                     priors=self.priors or None, seed=self.seed, progress=self._progress,
                     cancel=self.cancel_event, **self.fit_kwargs)
        self.chi2 = getattr(result, "chi2", self.chi2)
        return result
