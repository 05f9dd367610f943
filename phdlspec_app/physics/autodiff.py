"""autodiff: whether a tensor carries a derivative.

The compiled kernels and the sampled LSF take plain tensors only; every step that has a
fast no-derivative path asks this one question before taking it.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD

__all__ = ["carries_derivative"]


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
