"""autodiff: whether a tensor carries a derivative, and the compiled kernels that need to know.

The compiled kernels and the sampled LSF take plain tensors only; every step that has a
fast no-derivative path asks this one question before taking it. :func:`call_compiled`
runs a function through ``torch.compile`` (dynamic shapes) when its tensors are plain and
compilation is wanted (``PHDLSPEC_COMPILE`` ≠ "0"), eagerly otherwise; :func:`run_compiled`
does the same for callers that decide themselves (the line-opacity kernels, whose custom
autograd functions only ever pass plain tensors). One registry, one kill switch.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.autograd.forward_ad as fwAD

__all__ = ["carries_derivative", "want_compile", "compiled", "run_compiled", "call_compiled"]


def carries_derivative(*tensors, autograd: bool = True) -> bool:
    """True when any tensor is a forward-AD dual number, a ``torch.func`` wrapper or (with
    ``autograd``) requires grad."""
    for t in tensors:
        if not torch.is_tensor(t):
            continue
        if (torch._C._functorch.is_functorch_wrapped_tensor(t)
                or fwAD.unpack_dual(t).tangent is not None
                or (autograd and t.requires_grad)):
            return True
    return False


def want_compile(flag="auto") -> bool:
    """``flag`` as a bool; "auto": unless the environment sets ``PHDLSPEC_COMPILE=0``."""
    if flag == "auto":
        return os.environ.get("PHDLSPEC_COMPILE", "1") != "0"
    return bool(flag)


_COMPILED: dict = {}


def compiled(fn):
    """torch.compile'd ``fn`` (dynamic shapes), or ``fn`` when compilation is off/failed."""
    if not want_compile("auto") or _COMPILED.get("_disabled"):
        return fn
    if fn not in _COMPILED:
        try:
            _COMPILED[fn] = torch.compile(fn, dynamic=True)
        except Exception:  # pragma: no cover - no compiler
            _COMPILED["_disabled"] = True
            return fn
    return _COMPILED[fn]


def run_compiled(fn, use_compile: bool, *args):
    """``fn(*args)``, through :func:`compiled` when ``use_compile``: the one switch for every
    compiled kernel (the line-opacity kernels, the transfer, the hydrogen partials). A failed
    compilation warns once and falls back to eager for the rest of the process."""
    comp = compiled(fn) if use_compile else fn
    if comp is fn:
        return fn(*args)
    try:
        return comp(*args)
    except Exception as err:  # pragma: no cover - compile failure
        warnings.warn(f"compiled {fn.__name__} failed ({type(err).__name__}: {err}); eager", stacklevel=3)
        _COMPILED["_disabled"] = True
        return fn(*args)


def call_compiled(fn, *args):
    """``fn(*args)``, compiled when no tensor argument carries a derivative (see
    :func:`run_compiled`)."""
    plain = not carries_derivative(*(a for a in args if torch.is_tensor(a)), autograd=False)
    return run_compiled(fn, plain, *args)
