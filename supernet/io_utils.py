"""Atomic file writes: a reader never sees a half-written file, a killed writer leaves none."""
from __future__ import annotations

import contextlib
import errno
import functools
import glob
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

_WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                 errno.EROFS: "read-only file system", errno.ENOTDIR: "a parent path is not a directory",
                 errno.EISDIR: "it is a directory", errno.ENAMETOOLONG: "file name too long",
                 errno.ENOENT: "its directory cannot be created"}


def _remove_dead_temporaries(target: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp`` files beside ``target`` left by writers that no longer run (a kill)."""
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = tmp.name[len(target.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (same directory).

    The temporary is ``.<name>.<pid>.<random>.tmp``: a killed writer leaves at most that (never a partial
    ``path``), and the next write to ``path`` removes it. A full disk, a read-only or forbidden location
    raise :class:`UserError` naming the file; the previous ``path`` stays intact."""
    from supernet.errors import UserError

    target = Path(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        write(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if exc.errno in _WRITE_ERRNOS:
            raise UserError(f"{target}: cannot write ({_WRITE_ERRNOS[exc.errno]}); "
                            f"{'the previous file is intact' if target.exists() else 'nothing was written'}") from None
        raise
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, _write)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def safe_torch_load(path: str | os.PathLike, error: type[Exception], what: str) -> Any:
    """Read a ``torch.save`` file without executing code (``weights_only=True``): tensors and plain
    containers only. A missing file, a non-PyTorch file or a pickle that needs code raises ``error``
    (one line naming the file and ``what`` was expected)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: {what} file not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        needs_code = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        reason = "it needs code to unpickle, which is never run" if needs_code else type(exc).__name__
        raise error(f"{p}: cannot be read as a {what} file ({reason})") from None


MAX_YAML_BYTES = 1 << 20  # architecture and space files are a few KB


@functools.lru_cache(maxsize=1)
def _data_loader() -> type:
    """A SafeLoader that refuses anchors and aliases (built once; yaml is imported on first use)."""
    import yaml

    class DataLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.events.AliasEvent):
                raise yaml.YAMLError("aliases (*name) are not allowed in data files")
            if getattr(self.peek_event(), "anchor", None):
                raise yaml.YAMLError("anchors (&name) are not allowed in data files")
            return super().compose_node(parent, index)

    return DataLoader


def read_yaml_mapping(path: str | os.PathLike, error: type[Exception], what: str) -> dict[str, Any]:
    """A YAML data file's top-level mapping; a missing, oversized or malformed file, or a non-mapping,
    raises ``error`` naming the file.

    Data, not config: parsed with a safe loader that refuses anchors and aliases (no "billion laughs"
    expansion) and leaves ``${...}`` text as it is (no OmegaConf interpolation, no environment reads).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: {what} file not found")
    if p.stat().st_size > MAX_YAML_BYTES:
        raise error(f"{p}: {p.stat().st_size} bytes; a {what} file is at most {MAX_YAML_BYTES} bytes")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_data_loader())  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:  # malformed YAML
        raise error(f"{p}: not valid YAML ({exc.__class__.__name__}: {exc})".replace("\n", " ").splitlines()[0]) from None
    if not isinstance(data, dict):
        raise error(f"{p}: expected a mapping at the top level")
    return data
