"""The one exception type of the package (every layer raises it; it imports nothing)."""


class EADError(Exception):
    """An error a user can cause (bad file, bad option, bad checkpoint): the CLI prints one line."""
