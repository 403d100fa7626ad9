"""The one exception type for a user mistake: the CLI prints its message and exits with code 2."""


class HwnasError(ValueError):
    """A problem with the user's input (a file, an argument, a profile), with a clear message."""
