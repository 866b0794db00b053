"""EAD: Equivariant Asynchronous Diffusion for 3D molecule generation (An et al., arXiv 2603.10093).

Layers (each imports only those before it; tests/test_layout.py checks it): errors, version, io,
device, progress → data → metrics | model → diffusion → pipeline → train → cli (speed and viz beside train).
"""

from .errors import EADError
from .version import __version__


def __getattr__(name):  # lazy: `import ead` stays cheap, `ead.EAD` loads torch
    if name == "EAD":
        from .pipeline import EAD

        return EAD
    raise AttributeError(name)


__all__ = ["EAD", "EADError", "__version__"]
