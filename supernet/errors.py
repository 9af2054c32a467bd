"""User-facing errors and the CLI wrapper that turns them into one-line messages and exit code 2.

:class:`UserError` itself is defined in :mod:`conf.errors` (the bottom of the package graph, so the config
checks raise it too); this module gives it to the packages and adds the CLI wrapper."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

from conf.errors import UserError

__all__ = ["UserError", "report_user_errors"]

T = TypeVar("T")


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


def run_hydra_app(prog: str, hydra_main: Callable[[], object]) -> None:
    """Run a ``@hydra.main`` function as ``prog``, with one-line errors for what Hydra itself refuses or trips
    over before our code runs: conflicting flags (``-m`` with ``--cfg``, ``--shell-completion`` without its
    subcommand), which it raises as a bare ``ValueError`` (Hydra reports our own code's exceptions itself and
    exits, so none of them gets here), and a ``hydra.run.dir`` / ``hydra.sweep.dir`` that cannot be created."""
    from pathlib import Path

    args = sys.argv[1:]
    for i, arg in enumerate(args):
        given = args[i + 1].split("=")[0] if i + 1 < len(args) else ""
        if arg in ("--shell-completion", "-sc") and given not in ("install", "uninstall", "query"):
            print(f"{prog}: error: {arg} needs one of install=SHELL, uninstall=SHELL, query=SHELL (e.g. {arg} install=bash)",
                  file=sys.stderr)
            sys.exit(2)
    for arg in args:
        key, _, value = arg.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            try:
                Path(value).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                print(f"{prog}: error: {key}: cannot create {value} ({exc.strerror})", file=sys.stderr)
                sys.exit(2)
    try:
        hydra_main()
    except ValueError as exc:
        print(f"{prog}: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        sys.exit(2)
