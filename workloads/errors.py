"""The one error type for bad user input, shared by every layer (it lives in the lowest one)."""


class InputError(ValueError):
    """A user mistake (unknown preset, malformed file, out-of-range value): the CLI prints it as one
    line naming the file, the key, what was found and what is allowed, and exits with code 2."""
