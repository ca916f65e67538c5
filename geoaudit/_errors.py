"""Exceptions.  Anything derived from GeoauditError is a user-facing problem: the CLI prints
its message on one line and exits non-zero, without a traceback."""


class GeoauditError(Exception):
    """Base class of every error geoaudit raises on purpose."""


class InputError(GeoauditError, ValueError):
    """Bad input: a wrong argument, a missing column, a malformed file."""


class DependencyError(GeoauditError, RuntimeError):
    """Something the operation needs is not available (weights file, optional package)."""
