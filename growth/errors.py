"""Errors a user can act on. Library code raises these; only launch.py decides how to exit."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and what is valid."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or score."""

    def __init__(self, message: str, where: dict | None = None):
        super().__init__(message)
        self.where = dict(where or {})


class DryRunDone(Exception):
    """A dry run has printed what it would do; nothing is to run (launch.py exits 0)."""
