"""Where studies live, and keeping them honest when workers die.

* ``sqlite`` (default): ``<run_dir>/study.db``, one process (or a few on one host).
* ``journal``: ``<run_dir>/study.journal`` (Optuna's JournalFileBackend), many processes on one host. Its
  writers take :class:`JournalFlock`, which the kernel drops when a worker dies holding it; Optuna's default
  lock, left behind by a SIGKILLed writer, froze every other worker for 30 s.
* ``url``: any SQLAlchemy URL (``postgresql://user:pw@host/db``, ``mysql+pymysql://...``), many hosts.
* ``memory``: in-process (benchmarks, tests).

Heartbeats are ours, the same for every storage: a worker's thread stamps its running trial's
``heartbeat`` user attribute every ``interval_s``; any worker that has watched a RUNNING trial's
stamp stay unchanged for ``grace_s`` marks it FAIL (:class:`StaleWatch`), so a killed worker's trial
is not left running, and a storage stall that froze everyone is not taken for a death.
"""
from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from supernet.errors import UserError
from supernet.io_utils import file_lock

KINDS = ("sqlite", "journal", "url", "memory")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def storage_url(cfg: Mapping[str, Any], run_dir: Path) -> str:
    """The storage string recorded in search.json and printed: a SQLAlchemy URL, a journal file's absolute
    path (``optuna --storage`` and ``optuna-dashboard`` take both as they are), or ``memory:``."""
    kind = cfg.get("kind")
    if kind in ("sqlite", "journal"):
        name = cfg.get("file")
        if name is None:
            name = "study.db" if kind == "sqlite" else "study.journal"
        if URL_SCHEME.match(str(name)) or not str(name).strip() or str(name).endswith("/"):
            raise UserError(f"storage.file: {name!r} is not a file path (storage={kind} keeps the study in a file under "
                            "run_dir; a server's URL goes in storage=url storage.url=...)")
        path = (run_dir / str(name)).resolve()
        # a journal is a file path: what optuna's CLI and dashboard take
        return f"sqlite:///{path}" if kind == "sqlite" else str(path)
    if kind == "url":
        url = str(cfg.get("url") or "")
        if not URL_SCHEME.match(url):
            raise UserError(f"storage.url: {url!r} is not a SQLAlchemy URL (scheme://...), e.g. "
                            "storage.url=postgresql+psycopg://user:pw@host/optuna")
        return url
    if kind == "memory":
        return "memory:"
    raise UserError(f"storage.kind: {kind!r} is not one of {', '.join(KINDS)}")


def journal_path(url: str) -> Optional[Path]:
    """The journal file a storage string names (a plain path, or the older ``journal:<path>``), else None."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if url != "memory:" and "://" not in url:
        return Path(url)
    return None


def dashboard_target(url: str) -> Optional[str]:
    """What ``optuna-dashboard`` takes for this storage (the string itself); None in memory."""
    if url == "memory:":
        return None
    journal = journal_path(url)
    return str(journal) if journal is not None else url


def open_storage(url: str) -> BaseStorage:
    """Open the storage behind a :func:`storage_url` identifier; a damaged file or unreachable server
    is a one-line :class:`UserError` naming it."""
    if url == "memory:":
        return InMemoryStorage()
    try:
        path = journal_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFlock(path)))
        if url.startswith("sqlite:///"):
            db = Path(url[len("sqlite:///"):])
            db.parent.mkdir(parents=True, exist_ok=True)
            # workers started together would race to create the schema ("table ... already exists"): one at a time
            # (a database that exists with no lock beside it is complete: opened as it is)
            lock = db.with_name(db.name + ".lock")
            with file_lock(lock) if lock.exists() or not db.exists() else contextlib.nullcontext():
                return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
        return RDBStorage(url)
    except Exception as exc:  # a damaged file, an unreachable host, a missing driver, a bad URL
        first = str(exc).splitlines()[0] if str(exc) else ""
        where = "storage.url" if journal_path(url) is None and not url.startswith("sqlite:///") else "study storage"
        raise UserError(f"{where}: cannot open {url!r} ({type(exc).__name__}: {first[:200]})") from None


class JournalFlock:
    """A journal's writer lock: :func:`~supernet.io_utils.file_lock` on ``<journal>.flock``.

    The kernel releases it when its holder dies, even by SIGKILL, so the next writer goes on at once.
    Optuna's default (a symlink beside the journal) is broken only after 30 s without a change, and a
    worker killed while appending left every other worker waiting that long. Each thread's hold is its
    own (the heartbeat thread writes too), so threads exclude each other like processes do. Writers of
    one journal must all use it: Optuna's CLI and dashboard only read here. It has the two methods
    ``JournalFileBackend`` calls (Optuna's base class for them is private).
    """

    def __init__(self, journal: Path) -> None:
        self.path = journal.with_name(journal.name + ".flock")
        self._held = threading.local()

    def acquire(self) -> bool:
        hold = file_lock(self.path)
        hold.__enter__()
        self._held.hold = hold
        return True

    def release(self) -> None:
        hold = self._held.__dict__.pop("hold", None)
        if hold is None:
            raise RuntimeError(f"{self.path}: released without being held")
        hold.__exit__(None, None, None)


HEARTBEAT = "eformer:heartbeat"  # system attributes: bookkeeping stays out of the user attributes people browse
SURPLUS = "eformer:surplus"


def trial_id(study: optuna.Study, storage: BaseStorage, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``, through the storage's public lookups."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


class Heartbeat:
    """Context manager: stamp trial ``trial_id``'s heartbeat (system attribute) every ``interval_s`` seconds
    from a thread."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval_s: float) -> None:
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _beat(self) -> None:
        try:
            self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT, time.time())
        except Exception:  # the trial finished meanwhile (or was reaped): nothing to keep alive
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()

    def __enter__(self) -> "Heartbeat":
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class StaleWatch:
    """Fails RUNNING trials whose worker died, judged by what this worker itself saw.

    A trial is stale when this worker has watched its ``heartbeat`` stay unchanged for ``grace_s``
    seconds of its own clock. Wall-clock ages are not used: a storage stall (a database lock, a slow
    network file system) freezes every process, heartbeat threads included, after which every live
    heartbeat looks old; and hosts sharing a database do not share a clock. A watch that could not look often
    enough to tell (a read, or the gap since its last look, longer than ``grace_s / 2``) starts its
    clock over, so only uninterrupted observation condemns a trial.
    """

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s, self.clock = grace_s, clock
        self.seen: dict[int, tuple[Any, float]] = {}  # trial number -> (heartbeat value, since when unchanged)
        self.last_look: Optional[float] = None

    def look(self, study: optuna.Study, storage: BaseStorage) -> list[int]:
        """Observe the RUNNING trials of ``study`` (in ``storage``) once; fail those unchanged for ``grace_s``;
        return their numbers."""
        start = self.clock()
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        now = self.clock()
        interrupted = self.last_look is None or now - start > self.grace_s / 2 or start - self.last_look > self.grace_s / 2
        self.last_look = now
        seen: dict[int, tuple[Any, float]] = {}
        stale = []
        for t in running:
            beat = t.system_attrs.get(HEARTBEAT)
            before = self.seen.get(t.number)
            since = before[1] if before is not None and before[0] == beat and not interrupted else now
            seen[t.number] = (beat, since)
            if now - since > self.grace_s:
                stale.append(t)
        self.seen = seen
        reaped = []
        for t in stale:
            try:
                storage.set_trial_user_attr(trial_id(study, storage, t.number), "failed_reason", "no heartbeat (worker died)")
                study.tell(t.number, state=TrialState.FAIL)
                reaped.append(t.number)
            except Exception:  # another worker reaped (or the owner finished) it first
                pass
            self.seen.pop(t.number, None)
        return reaped
