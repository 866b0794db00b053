"""EAD: Equivariant Asynchronous Diffusion for 3D molecule generation (An et al., arXiv 2603.10093)."""

__version__ = "0.1.0"


class EADError(Exception):
    """An error a user can cause (bad file, bad option, bad checkpoint): the CLI prints one line."""


def __getattr__(name):  # lazy: `import ead` stays cheap, `ead.EAD` loads torch
    if name == "EAD":
        from .pipeline import EAD

        return EAD
    raise AttributeError(name)


__all__ = ["EAD", "EADError", "__version__"]
