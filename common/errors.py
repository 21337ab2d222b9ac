"""Errors the user can act on. The command line prints their message as one line and exits 2."""


class GencondError(Exception):
    """Base class: the message says what is wrong and where (file, option, rank)."""


class DataError(GencondError):
    """A missing, corrupt or inconsistent input file."""


class ConfigError(GencondError):
    """An impossible or unknown configuration value."""


class InUseError(GencondError):
    """Another gencond process holds the lock of the output folder."""
