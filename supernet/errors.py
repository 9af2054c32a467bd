"""User-facing errors and the CLI wrapper that turns them into one-line messages and exit code 2.

:class:`UserError` itself is defined in :mod:`conf.errors` (the bottom of the package graph, so the config
checks raise it too); this module gives it to the packages and adds the CLI wrapper."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

from conf.errors import UserError

__all__ = ["UserError", "report_user_errors"]

T = TypeVar("T")


FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra re-raises composition errors where it is set, instead of printing them
OURS = "EFORMER_HYDRA_FULL_ERROR"  # marks a HYDRA_FULL_ERROR the apps set (their child processes inherit both)


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
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    ours = os.environ.get(OURS) == "1" or FULL_ERROR not in os.environ  # a user who set it gets Hydra's full report
    if ours:
        os.environ[FULL_ERROR] = os.environ[OURS] = "1"
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as exc:  # what Hydra refused while composing
        if not ours:
            raise
        print(f"{prog}: error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(2)
    except ValueError as exc:
        print(f"{prog}: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        sys.exit(2)
    finally:
        if ours:
            os.environ.pop(FULL_ERROR, None)
            os.environ.pop(OURS, None)


def _message_lines(text: str) -> list[str]:
    """The lines of a Hydra / OmegaConf message worth one line: a list of options after its ``...:`` line joined
    comma-separated (our schemas' ``base_*`` entries left out), without OmegaConf's key and type lines, Hydra's
    config search path and its documentation links."""
    parts: list[str] = []
    listing = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Config search path"):
            break
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=", "See https://hydra.cc")):
            continue
        if listing and raw.startswith(("\t", "  ")):
            if not line.startswith("base_"):
                parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            continue
        listing = line.endswith(":")
        parts.append(line)
    return parts


def composition_error(exc: BaseException) -> str:
    """Hydra's composition error on one line, led by the key (or override) at fault: the OmegaConf error behind
    it first, then Hydra's own words in parentheses."""
    from omegaconf.errors import OmegaConfBaseException

    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
    omega = cause if cause is not None else (exc if isinstance(exc, OmegaConfBaseException) else None)
    where = getattr(omega, "full_key", None) or getattr(exc, "override", None)
    main = _message_lines(str(omega if omega is not None else exc))
    context = _message_lines(str(exc)) if cause is not None else []
    message = "; ".join(main) + (f" ({'; '.join(context)})" if context else "")
    override = getattr(exc, "override", None) or ""
    if "=[" in override and "=" in override.split("=[", 1)[1]:  # a list of overrides, e.g. a pipeline stage's
        key = override.split("=[", 1)[0]
        message += f"; quote list items that hold '=': '{key}=[\"a.b=1\"]'"
    return f"{where}: {message}" if where else message
