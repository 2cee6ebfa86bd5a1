"""Errors a user can act on. Library code raises these; only launch.py decides how to exit."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and what is valid."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or score."""

    def __init__(self, message: str, where: dict | None = None):
        super().__init__(message)
        self.where = dict(where or {})


# Hydra's callback runner turns an Exception raised in a callback into a warning and carries on,
# so what must stop a sweep before it launches derives from BaseException (as SystemExit does).


class LaunchRefused(BaseException):
    """A sweep was refused before anything was launched (launch.py prints it and exits 2)."""


class DryRunDone(BaseException):
    """A dry run has printed what it would do; nothing is to run (launch.py exits 0)."""
