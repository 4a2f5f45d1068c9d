"""Errors a user can act on, and the exit codes the CLI maps them to.

Exit codes (documented in the README):
    0  success: every check passed
    1  a verdict: a check (parity, validation) failed
    2  unusable input or usage: missing or corrupt file, unknown name, bad flag or config
    3  a missing optional dependency or hardware (TensorRT, a GPU, the serve extra)
  130  interrupted (Ctrl-C, or SIGTERM during an export); nothing half-written is left behind
"""

from __future__ import annotations

import difflib

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_INTERRUPTED = 130


class DeployKitError(Exception):
    """An error with a one-line message meant for the user; the CLI prints it without a traceback."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CheckFailed(DeployKitError):
    """A verdict: outputs differ, a model fails validation."""

    exit_code = EXIT_CHECK_FAILED


class UserInputError(DeployKitError):
    """The input cannot be used at all: bad file, unknown name, invalid config."""

    exit_code = EXIT_USAGE


class MissingDependency(DeployKitError):
    """An optional package, library or device is absent; the hint says how to get it."""

    exit_code = EXIT_MISSING_DEPENDENCY


def unknown_name_error(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UserInputError:
    """`unknown block 'sma'; did you mean 'sam'? valid blocks: se, sam, ...` (or `unknown block 'x'; valid
    blocks: ...`) as a UserInputError."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    suggestion = f"; did you mean '{close[0]}'?" if close else ";"
    return UserInputError(f"unknown {kind} '{name}'{suggestion} valid {kind}s: {', '.join(valid)}")


def require(module: str, *, extra: str | None = None, purpose: str = ""):
    """Import an optional dependency or raise MissingDependency with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            # Ctrl-C or SIGTERM while an extension module initialised: an interruption, not a missing package.
            raise KeyboardInterrupt from None
        pkg = f"deploykit[{extra}]" if extra else module
        why = f" for {purpose}" if purpose else ""
        raise MissingDependency(
            f"{module} is not installed{why}: {exc.__class__.__name__}: {exc}",
            hint=f"install it with: pip install '{pkg}'",
        ) from exc
