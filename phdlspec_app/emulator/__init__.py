"""The transformer emulator with differential spectra embedded as physical priors.

May import ``physics``, ``io``, ``labels`` and ``paths``; never ``fitting``,
``calibration`` or ``app``.

    from phdlspec_app.emulator import load_emulator
    emu = load_emulator()                 # the default model in assets/emulator/
    flux = emu(labels)                    # (N, 32) labels -> (N, 3909) normalized flux
    jac = emu.jacobian(labels)            # (N, 32, 3909) d flux / d label
    ok = emu.in_domain(labels)            # inside the training domain?

Modules: ``network`` (the transformer), ``broadening`` (vbroad and rv, analytic),
``domain`` (the training domain), ``model`` (the Emulator object and its file format),
``train`` (training with the gradient-matching prior), ``command`` (``phdlspec train``).
"""
from .model import Emulator, EmulatorFileError, default_model_path, load_emulator

__all__ = ["Emulator", "EmulatorFileError", "load_emulator", "default_model_path"]
