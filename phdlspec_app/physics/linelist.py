"""Spectral line lists (docs/physics.md, "linelist.py").

The implementation lives in the ``physics.linelists`` sub-package (one module per file
format); this module is the stable entry point named in the module contracts::

    from phdlspec_app.physics.linelist import LineList, load_default_linelist
    ll = load_default_linelist(3650, 9150)      # Å vacuum, cached as .npz
    ll.select(5160, 5190)[ll.select(5160, 5190).species_mask("Mg I")]
"""
from .linelists import *  # noqa: F401,F403
from .linelists import __all__  # noqa: F401
