"""The package version (pyproject.toml's), importable from every layer without loading the rest."""

__version__ = "0.1.0"
