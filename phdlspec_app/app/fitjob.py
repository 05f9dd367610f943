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


def _share_cpus_with_the_server() -> None:
    """Keep the server responsive while fits run in its process: torch's intra-op pool to one
    thread (a fit then uses one core; the emulator's few-ms evaluations barely notice), and a
    1 ms GIL switch interval (default 5 ms) so the event loop gets the interpreter back quickly
    from a fit's Python loops."""
    import sys

    try:
        import torch

        if torch.get_num_threads() > 1:
            torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if sys.getswitchinterval() > 0.001:
        sys.setswitchinterval(0.001)


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


def _fit_process_main(spectrum, emulator, kwargs, queue, cancel) -> None:
    """Entry point of a fit's worker process (spawned; importable, so picklable).

    ``emulator`` None loads the default model here. Sends ("progress", stage, fraction, chi2),
    then ("done", FitResult) or ("cancelled",) or ("failed", message) on ``queue``."""
    try:
        import torch

        torch.set_num_threads(1)  # one core for the fit, the other for the server
        try:
            os.nice(10)  # interactive work (the server, the browsers) goes first on a busy machine
        except OSError:  # pragma: no cover
            pass
        from phdlspec_app.fitting import FitCancelled, fit_spectrum

        if emulator is None:
            from phdlspec_app.emulator import load_emulator

            emulator = load_emulator()

        def progress(stage, fraction=0.0, *extra, **info):
            chi2 = info.get("chi2", extra[0] if extra else None)
            queue.put(("progress", str(stage), float(fraction), None if chi2 is None else float(chi2)))

        try:
            result = fit_spectrum(spectrum, emulator, progress=progress, cancel=cancel, **kwargs)
        except FitCancelled:
            queue.put(("cancelled",))
            return
        queue.put(("done", result))
    except BaseException as exc:  # everything goes back to the server as a message
        queue.put(("failed", f"{type(exc).__name__}: {exc}"))


class FitJob(Job):
    """One fit of one spectrum (``fitting.fit_spectrum``, or ``fit``), run in the pool.

    With the real ``fit_spectrum`` (``fit`` None) and ``in_process=False`` (the default when
    served), the fit runs in its own spawned process, so that its Python loops never hold
    the server's GIL (measured: slider p95 208 ms with an in-thread fit); the pool thread
    relays progress and cancellation. ``emulator_for_process``: what the process gets
    (None: it loads the default model itself).

    stage, fraction : the fit's last progress report; chi2 : the current chi2 when the
    fitter reports one, else None; result : the :class:`~phdlspec_app.fitting.FitResult`.
    """

    def __init__(self, spectrum, emulator, method: str = "cmaes", fix=None, priors=None, seed: int = 0,
                 fit=None, in_process: bool = True, emulator_for_process="same", **fit_kwargs):
        super().__init__()
        self.spectrum, self.emulator = spectrum, emulator
        self.method, self.fix, self.priors, self.seed = method, dict(fix or {}), dict(priors or {}), seed
        self.fit_kwargs = fit_kwargs
        self._fit = fit  # the fitting function (default: phdlspec_app.fitting.fit_spectrum)
        self.in_process = in_process and fit is None
        self.emulator_for_process = emulator if emulator_for_process == "same" else emulator_for_process

    def _work_in_process(self):
        import multiprocessing as mp
        import queue as queue_mod

        ctx = mp.get_context("spawn")
        q, cancel = ctx.Queue(), ctx.Event()
        kwargs = dict(method=self.method, fix=self.fix or None, priors=self.priors or None, seed=self.seed,
                      **self.fit_kwargs)
        proc = ctx.Process(target=_fit_process_main, name="phdlspec-fit",
                           args=(self.spectrum, self.emulator_for_process, kwargs, q, cancel), daemon=True)
        self.stage = "starting a fit process"
        proc.start()
        cancel_sent = None
        try:
            while True:
                if self.cancel_event.is_set() and cancel_sent is None:
                    cancel.set()
                    cancel_sent = time.monotonic()
                if cancel_sent is not None and time.monotonic() - cancel_sent > 10 and proc.is_alive():
                    proc.terminate()  # the fitter did not stop within 10 s
                try:
                    msg = q.get(timeout=0.2)
                except queue_mod.Empty:
                    if not proc.is_alive():
                        if self.cancel_event.is_set():
                            raise RuntimeError("cancelled")
                        raise RuntimeError(f"the fit process ended without a result (exit code {proc.exitcode})")
                    continue
                if msg[0] == "progress":
                    self.stage, self.fraction = msg[1], msg[2]
                    if msg[3] is not None:
                        self.chi2 = msg[3]
                elif msg[0] == "done":
                    return msg[1]
                elif msg[0] == "cancelled":
                    self.cancel_event.set()
                    raise RuntimeError("cancelled")
                else:
                    raise RuntimeError(msg[1])
        finally:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()

    def _progress(self, stage, fraction=0.0, *extra, **info) -> None:
        self.stage, self.fraction = str(stage), float(fraction)
        chi2 = info.get("chi2", extra[0] if extra else None)
        if chi2 is not None:
            self.chi2 = float(chi2)

    def work(self):
        if self.in_process:
            result = self._work_in_process()
            self.chi2 = getattr(result, "chi2", self.chi2)
            return result
        _share_cpus_with_the_server()
        fit = self._fit
        if fit is None:
            from phdlspec_app.fitting import fit_spectrum as fit
        result = fit(self.spectrum, self.emulator, method=self.method, fix=self.fix or None,
                     priors=self.priors or None, seed=self.seed, progress=self._progress,
                     cancel=self.cancel_event, **self.fit_kwargs)
        self.chi2 = getattr(result, "chi2", self.chi2)
        return result
