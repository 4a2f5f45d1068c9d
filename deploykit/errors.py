"""Errors a user can act on, and the exit codes the CLI maps them to.

Exit codes (documented in the README):
    0  success: every check passed
    1  a verdict: a check (parity, validation) failed
    2  unusable input or usage: missing or corrupt file, unknown name, bad flag or config
    3  a missing optional dependency or hardware (TensorRT, a GPU, the serve extra)
  130  interrupted (Ctrl-C, or SIGTERM during an export); the repository holds the old or the new models,
       never a mix, and the message says which
"""

from __future__ import annotations

import difflib

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING_DEPENDENCY = 3
EXIT_INTERRUPTED = 130
# Echoed user values (config fields, paths) are cut to this many characters in a one-line error.
ECHO_LIMIT = 200
# Longest message one error line prints; longer ones echo user input and are cut.
MESSAGE_LIMIT = 2000


class DeployKitError(Exception):
    """An error with a one-line message meant for the user; the CLI prints it without a traceback."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        # A message echoing user input (a config's arguments, a path) is cut so that the line stays readable.
        message = shorten(self.message, MESSAGE_LIMIT)
        return f"{message} ({shorten(self.hint, MESSAGE_LIMIT)})" if self.hint else message


class CheckFailed(DeployKitError):
    """A verdict: outputs differ, a model fails validation."""

    exit_code = EXIT_CHECK_FAILED


class UserInputError(DeployKitError):
    """The input cannot be used at all: bad file, unknown name, invalid config."""

    exit_code = EXIT_USAGE


class MissingDependency(DeployKitError):
    """An optional package, library or device is absent; the hint says how to get it."""

    exit_code = EXIT_MISSING_DEPENDENCY


class Interrupted(DeployKitError):
    """Ctrl-C or SIGTERM, with a message that says what state the work was left in."""

    exit_code = EXIT_INTERRUPTED


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """An echoed value cut to a readable length, saying how much was cut."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text) - limit} more characters]"


def out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or an allocator failure PyTorch or numpy reports as another exception type."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("DefaultCPUAllocator", "not enough memory", "CUDA out of memory",
                                      "Unable to allocate"))


def unknown_name_error(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UserInputError:
    """`unknown block 'sma'; did you mean 'sam'? valid blocks: se, sam, ...` (or `unknown block 'x'; valid
    blocks: ...`) as a UserInputError."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    suggestion = f"; did you mean '{close[0]}'?" if close else ";"
    return UserInputError(f"unknown {kind} '{name}'{suggestion} valid {kind}s: {', '.join(valid)}",
                          hint="pass one of the valid names")


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
