"""The error type for bad user input to the workloads layer."""


class WorkloadInputError(ValueError):
    """A user mistake (unknown model, malformed config): reported as one line, never a traceback."""
