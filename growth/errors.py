"""Errors a user can act on. Library code raises these; only launch.py decides how to exit."""

import re


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


# Advice a library's error may give that would weaken a safety setting: loading a file with
# pickle's code execution, trusting remote code, skipping a verification. Never passed on.
_UNSAFE_ADVICE = re.compile(
    r"weights_only\W*(=|set to|to)\W*False|weights_only=False|allow_pickle\s*=\s*True|trust_remote_code"
    r"|TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD|add_safe_globals|safe_globals\(|--no-verify|verify\s*=\s*False|arbitrary code execution",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
REMOVED = "(a library's advice to weaken a safety setting was left out: the framework never loads files that way)"


def safe_text(text: str) -> str:
    """`text` without the sentences that advise weakening a safety setting (torch.load's advice
    to pass weights_only=False, for one), saying that something was left out."""
    if not _UNSAFE_ADVICE.search(text):
        return text
    kept = []
    for line in text.splitlines():
        sentences = [s for s in _SENTENCE.split(line) if s and not _UNSAFE_ADVICE.search(s)]
        if sentences or not line.strip():
            kept.append(" ".join(sentences))
    return "\n".join(kept).rstrip() + " " + REMOVED
