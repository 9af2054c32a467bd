"""Guarded reads of a user's files and atomic writes of outputs.

* :func:`check_readable` / :func:`read_user_bytes` / :func:`read_user_text`: the one way to open a file a user
  named - missing, unreadable, a directory, too large or not UTF-8 each give one line naming the file.
* :func:`atomic_write`: a reader never sees a half-written file, a killed or failed writer leaves none.
* :func:`file_lock`: an exclusive advisory lock file, removed by its holder when it ends (success or failure).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import glob
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from conf.errors import UserError

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


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], check: Callable[[str], None] | None = None) -> Path:
    """Call ``write(tmp_path)``, then ``check(tmp_path)`` if given, then rename the temporary file onto ``path``
    (same directory). Whatever fails - the write or the check - nothing appears at ``path`` and no temporary is left.

    The temporary is ``.<name>.<pid>.<random>.tmp``: a killed writer leaves at most that (never a partial
    ``path``), and the next write to ``path`` removes it. A full disk, a read-only or forbidden location
    raise :class:`UserError` naming the file; the previous ``path`` stays intact."""
    target = Path(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        write(tmp)
        if check is not None:
            check(tmp)
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


def check_parents(out: str | os.PathLike, error: type[Exception], flag: str) -> Path:
    """Refuse an output path under a regular file (before any work): ``<flag>: <parent> is a file, ...``."""
    out = Path(out)
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise error(f"{flag}: {parent} is a file, so {out} cannot be written")
    return out


def make_dir(path: str | os.PathLike, key: str) -> Path:
    """Create the directory ``path`` (and its parents) or raise one line naming ``key`` and why it cannot be."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = _WRITE_ERRNOS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
        raise UserError(f"{key}: cannot create {p} ({why})") from None
    return p


def check_output_dir(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output directory that is a file or lies under one (before any work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag}: {out} is a file; give a directory")
    return check_parents(out, UserError, flag)


def check_output(out: str | os.PathLike, *inputs: Optional[str], flag: str = "--out") -> Path:
    """Refuse an output file path that is an input, a directory, or under a regular file (before any work)."""
    out = Path(out)
    for given in inputs:
        if given and Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
            raise UserError(f"{flag}: {out} is also an input; choose another output path")
    if out.is_dir():
        raise UserError(f"{flag}: {out} is a directory; give a file path")
    return check_parents(out, UserError, flag)


class LockBusy(Exception):
    """:func:`file_lock` with ``blocking=False`` found the lock held by another process."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (the OS drops it when the holder dies, even by
    SIGKILL); ``blocking=False`` raises :class:`LockBusy` at once when another process holds it.

    The holder removes the file when it is done, by success or failure, while still holding the lock; a process
    that was waiting on the removed file notices (its inode is no longer the path's) and locks the new one, so
    two holders never coexist and no lock file outlives the run that made it (a SIGKILLed holder's file stays,
    unlocked, and the next holder removes it)."""
    import fcntl

    p = Path(path)
    while True:
        fh = open(p, "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.close()
            raise LockBusy(str(p)) from None
        try:
            current = os.fstat(fh.fileno()).st_ino == os.stat(p).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        fh.close()  # the previous holder removed it between our open and our lock: lock the new file
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            p.unlink()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


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


def check_readable(path: str | os.PathLike, error: type[Exception], what: str, max_bytes: int | None = None) -> Path:
    """``path`` as a readable regular file of at most ``max_bytes``, else ``error`` naming the file and the problem."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"{p}: {what} file not found") from None
    except OSError as exc:
        raise error(f"{p}: cannot be read ({(exc.strerror or type(exc).__name__).lower()})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{p}: is a directory; expected a {what} file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: not a regular file; expected a {what} file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{p}: {st.st_size} bytes; a {what} file is at most {max_bytes} bytes")
    if not os.access(p, os.R_OK):
        raise error(f"{p}: cannot be read (permission denied)")
    return p


def read_user_bytes(path: str | os.PathLike, error: type[Exception], what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a user's file, guarded by :func:`check_readable` (and against a failing read)."""
    p = check_readable(path, error, what, max_bytes)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise error(f"{p}: cannot be read ({(exc.strerror or type(exc).__name__).lower()})") from None


def read_user_text(path: str | os.PathLike, error: type[Exception], what: str, max_bytes: int | None = None) -> str:
    """The UTF-8 text of a user's file, guarded like :func:`read_user_bytes`."""
    data = read_user_bytes(path, error, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{Path(path)}: not UTF-8 text; expected a {what} file") from None


def safe_torch_load(path: str | os.PathLike, error: type[Exception], what: str) -> Any:
    """Read a ``torch.save`` file without executing code (``weights_only=True``): tensors and plain
    containers only. A missing file, a non-PyTorch file or a pickle that needs code raises ``error``
    (one line naming the file and ``what`` was expected)."""
    import torch

    p = check_readable(path, error, what)
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
    text = read_user_text(p, error, what, MAX_YAML_BYTES)
    try:
        data = yaml.load(text, Loader=_data_loader())  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, RecursionError) as exc:  # malformed YAML
        raise error(f"{p}: not valid YAML ({exc.__class__.__name__}: {exc})".replace("\n", " ").splitlines()[0]) from None
    if not isinstance(data, dict):
        raise error(f"{p}: expected a mapping at the top level")
    return data
