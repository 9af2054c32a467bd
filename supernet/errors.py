"""User-facing errors and the CLI wrapper that turns them into one-line messages and exit code 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A mistake in the user's input (file, option, config); reported in one line, no traceback."""


def report_user_errors(prog: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator for CLI entry points: ``UserError`` -> ``prog: error: message`` on stderr, exit 2."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserError as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                sys.exit(2)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                sys.exit(130)

        return run

    return wrap
