"""Crash-consistent installs into the model repository: a journal, renames, and recovery.

The design follows SQLite's rollback journal:

1. Every new entry (a version directory with model.onnx and deploykit.json, and its config.pbtxt) is written
   in full into a staging directory beside its final place, and fsynced (files, then directories).
2. A journal, `<repo>/.deploykit-journal-<run>.json`, lists every rename the install will make (new ->
   target, target -> aside) and is fsynced, with its directory, before the first rename.
3. The renames run, each followed by an fsync of its directory. Once the last one is done the install is
   committed: the moved-aside old entries are deleted, then the journal.
4. Every command that opens a repository first calls `recover(repo)`: the journal of a dead run is rolled
   back (old entries restored) while some new entry is still staged, and rolled forward (asides deleted)
   once every new entry is in place. A kill -9 or a power cut at any moment thus leaves exactly the old or
   exactly the new models.

Runs are told apart by a run id in every name they create. A run holds an flock on
`<repo>/.deploykit-run-<run>.lock` while it lives; the kernel drops it when the process dies, so recovery
touches only what belongs to dead runs, and two exports can share one repository.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.repository import TMP_PREFIX, fsync_dir, register_run

JOURNAL_PREFIX = ".deploykit-journal-"
LOCK_PREFIX = ".deploykit-run-"
WORK_PREFIX = ".deploykit-export-"
STAGING_PREFIX = ".staging-"
ASIDE_PREFIX = ".old-"
# A failpoint for tests and benchmarks/reliability.py: SIGKILL this process right before install step N
# (0-based; every file system change of the install is one step).
KILL_AT_STEP_ENV = "DEPLOYKIT_KILL_AT_STEP"

_RUN_ID = re.compile(r"[0-9a-f]{12}")


# ------------------------------------------------------------------------------------------ durability
def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory bottom-up: written content counts only once durable."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def remove(path: Path) -> None:
    """Delete a version directory or a file (config.pbtxt, a stray version file); nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()


# ------------------------------------------------------------------------------------------ run ownership
class Run:
    """One process's claim on a repository: a run id and the flock that says it is alive."""

    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self.id = uuid.uuid4().hex[:12]
        self.lock_path = self.repo / f"{LOCK_PREFIX}{self.id}.lock"
        # Locked under a temporary name, then renamed: another process never sees this run's lock unlocked.
        tmp = self.repo / f".deploykit-lock-{self.id}.tmp"
        self._fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        os.replace(tmp, self.lock_path)
        register_run(self.repo, self.id)   # its atomic writes' temporary files carry its id

    def name(self, prefix: str, rest: str = "") -> str:
        """A name owned by this run: `<prefix><run>-<rest or random>`."""
        return f"{prefix}{self.id}-{rest or uuid.uuid4().hex[:8]}"

    def close(self) -> None:
        if self._fd is None:
            return
        register_run(self.repo, None)
        self.lock_path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _alive(repo: Path, run_id: str) -> bool:
    """Whether the run holding `<repo>/.deploykit-run-<run_id>.lock` still lives (it holds the flock)."""
    try:
        fd = os.open(repo / f"{LOCK_PREFIX}{run_id}.lock", os.O_RDWR)
    except FileNotFoundError:
        return False   # a live run creates its lock before any other name
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


@contextlib.contextmanager
def _claimed(repo: Path, run_id: str):
    """Hold a dead run's lock while recovering its install, so that two commands starting at once (two
    servers) never both undo it; yields False where the run lives or another command is recovering it."""
    lock = repo / f"{LOCK_PREFIX}{run_id}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            yield False
            return
        yield True
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ install
@dataclass
class Staged:
    """One model entry written in full beside its final place: `staging` becomes the version directory
    `target`, and `staging/config.pbtxt` the model's `config`. `artifact` is the caller's record of it."""

    staging: Path
    target: Path
    config: Path
    artifact: object = None


@dataclass
class Move:
    """One rename of the install: `new` (staged) becomes `target`; what was at `target` goes to `aside`."""

    new: Path
    target: Path
    aside: Path

    def as_dict(self, repo: Path) -> dict:
        """Paths relative to the repository, so that a repository mounted elsewhere (a container) recovers."""
        return {k: os.path.relpath(getattr(self, k), repo) for k in ("new", "target", "aside")}


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


class _Steps:
    """Counts the install's file system changes, for the kill-at-step failpoint."""

    def __init__(self):
        value = os.environ.get(KILL_AT_STEP_ENV, "")
        self.kill_at = int(value) if value.isdigit() else None
        self.n = 0

    def __call__(self) -> None:
        if self.n == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.n += 1


def staging_dir(run: Run, model_dir: Path) -> Path:
    """A fresh staging directory beside a model's versions, owned by `run`."""
    path = model_dir / run.name(STAGING_PREFIX)
    path.mkdir()
    return path


def discard(staged: list[Staged]) -> None:
    """Delete what is left of staged entries (all of it after a failure, nothing after an install)."""
    for entry in staged:
        remove(entry.staging)
        for leftover in entry.config.parent.glob(f"{entry.staging.name}-config.pbtxt"):
            remove(leftover)


def install(run: Run, staged: list[Staged]) -> None:
    """Rename every staged entry into place, or none, surviving a kill at any point (see the module doc).

    A failure here (a full disk, a permission change) rolls back in this process; a kill is rolled back or
    forward by the next `recover`.
    """
    step = _Steps()
    moves: list[Move] = []
    for entry in staged:
        # config.pbtxt leaves the staging directory first, so that each rename's source is its own name.
        config_new = entry.config.with_name(f"{entry.staging.name}-config.pbtxt")
        os.replace(entry.staging / "config.pbtxt", config_new)
        fsync_tree(entry.staging)
        for new, target in ((config_new, entry.config), (entry.staging, entry.target)):
            moves.append(Move(new, target, target.with_name(run.name(ASIDE_PREFIX, target.name))))
    for new in (m.new for m in moves if not m.new.is_dir()):
        _fsync_file(new)
    for parent in dict.fromkeys(m.target.parent for m in moves):
        fsync_dir(parent)
    journal = run.repo / f"{JOURNAL_PREFIX}{run.id}.json"
    step()
    _write_journal(journal, moves, run.repo)
    try:
        for move in moves:
            if _exists(move.target):
                step()
                os.replace(move.target, move.aside)
                fsync_dir(move.target.parent)
            step()
            os.replace(move.new, move.target)
            fsync_dir(move.target.parent)
    except BaseException:
        _roll_back(moves)
        journal.unlink(missing_ok=True)
        raise
    # Committed: every new entry is in place; what follows only deletes the old ones.
    _roll_forward(moves, step)
    step()
    journal.unlink(missing_ok=True)
    fsync_dir(run.repo)


def install_version(repo: Path, model_dir: Path, version: int, fill) -> tuple[Path, bool]:
    """Install one version directory and its config.pbtxt the crash-consistent way, for commands that write
    a single entry (build's engine, tune's pick): a run of its own, a staging directory that `fill(staging)`
    writes in full (config.pbtxt included), then `install`. Returns the version directory and whether a
    Ctrl-C or SIGTERM arrived during the install (the entry is in place either way)."""
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        run = Run(repo)
    except OSError as exc:
        raise UserInputError(f"model repository '{repo}' is not writable: {exc.strerror or exc}",
                             hint="pass --out with a directory you can write to") from None
    with run:
        entry = Staged(staging_dir(run, model_dir), model_dir / str(version), model_dir / "config.pbtxt")
        try:
            fill(entry.staging)
            with signals_deferred() as caught:
                install(run, [entry])
        finally:
            discard([entry])
    return entry.target, bool(caught)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_journal(path: Path, moves: list[Move], repo: Path) -> None:
    data = json.dumps({"version": 1, "pid": os.getpid(), "moves": [m.as_dict(repo) for m in moves]}, indent=1)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _roll_back(moves: list[Move]) -> None:
    """Undo in reverse, by renames only, so that a kill while undoing leaves a state this undoes again: a
    target whose staged source is gone is the new entry (names are unique per run) and goes back to its
    staged name; then what was moved aside comes back."""
    for move in reversed(moves):
        if not _exists(move.new) and _exists(move.target):
            os.replace(move.target, move.new)
        if _exists(move.aside):
            os.replace(move.aside, move.target)
        fsync_dir(move.target.parent)


def _roll_forward(moves: list[Move], step=lambda: None) -> None:
    for move in moves:
        if _exists(move.aside):
            step()
            remove(move.aside)
    for parent in dict.fromkeys(m.target.parent for m in moves):
        fsync_dir(parent)


# ------------------------------------------------------------------------------------------ recovery
def recover(repo: str | Path) -> list[str]:
    """Finish or undo the installs of dead runs in `repo`, then delete the leftovers of dead runs.

    Run first by every command that opens a repository. Returns one line per action taken. Does nothing
    (and writes nothing) on a clean repository, so a read-only repository serves as before.

    Raises:
        UserInputError: a dead run's install could not be rolled back or forward (e.g. a read-only mount).
    """
    repo = Path(repo)
    if not repo.is_dir():
        return []
    actions: list[str] = []
    try:
        top = list(repo.iterdir())
    except OSError:
        return []
    for journal in sorted(p for p in top if p.name.startswith(JOURNAL_PREFIX) and p.name.endswith(".json")):
        run_id = journal.name[len(JOURNAL_PREFIX):-len(".json")]
        try:
            with _claimed(repo, run_id) as mine:
                if mine and journal.exists():
                    actions.append(_recover_journal(journal))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserInputError(f"model repository '{repo}' holds an interrupted install ({journal.name}) that "
                                 f"could not be finished or undone: {exc}",
                                 hint="rerun the command as a user who can write the repository") from None
    actions += _clean_leftovers(repo)
    return actions


def _recover_journal(journal: Path) -> str:
    data = json.loads(journal.read_text(encoding="utf-8"))
    repo = journal.parent
    moves = [Move(repo / m["new"], repo / m["target"], repo / m["aside"]) for m in data["moves"]]
    if any(".." in Path(p).parts or Path(p).is_absolute() for m in data["moves"] for p in m.values()):
        raise ValueError("the journal names paths outside the repository")
    # Committed once no new entry is left in staging: roll forward; else restore every old entry.
    if any(_exists(m.new) for m in moves):
        _roll_back(moves)
        for move in moves:
            remove(move.new)
        verdict = "rolled back to the previous models"
    else:
        _roll_forward(moves)
        verdict = "rolled forward to the new models"
    journal.unlink()
    fsync_dir(journal.parent)
    return f"an interrupted install ({journal.name}) was {verdict}"


def _owner(name: str, prefix: str) -> str | None:
    """The run id in `<prefix><run>-...`, or None for a name without one (deploykit before journals)."""
    rest = name[len(prefix):]
    return rest[:12] if _RUN_ID.fullmatch(rest[:12]) and rest[12:13] == "-" else None


def _clean_leftovers(repo: Path) -> list[str]:
    """Delete what dead runs left: work and staging directories, moved-aside entries, stale locks."""
    actions: list[str] = []
    alive: dict[str, bool] = {}

    def dead(run_id: str | None) -> bool:
        if run_id is None:
            return True
        if run_id not in alive:
            alive[run_id] = _alive(repo, run_id)
        return not alive[run_id]

    try:
        entries = list(repo.iterdir())
    except OSError:
        return actions
    for entry in entries:
        name = entry.name
        with contextlib.suppress(OSError):   # another command may be cleaning the same entry
            if name.startswith(WORK_PREFIX) and dead(_owner(name, WORK_PREFIX)):
                remove(entry)
                actions.append(f"removed {entry}")
            elif name.startswith(LOCK_PREFIX) and name.endswith(".lock") and dead(name[len(LOCK_PREFIX):-5]):
                entry.unlink(missing_ok=True)
            elif name.startswith((".deploykit-lock-", JOURNAL_PREFIX)) and name.endswith(".tmp") and _unheld(entry):
                entry.unlink(missing_ok=True)   # a lock or journal a run died while writing
            elif entry.is_dir() and not name.startswith("."):
                actions += _clean_model_dir(entry, dead)
            else:
                actions += _clean_temporary(entry, dead)
    return actions


def _clean_temporary(entry: Path, dead) -> list[str]:
    """A dead run's atomic-write temporary file (`.deploykit-tmp-<run>-...tmp`), or a write-test probe of
    deploykit before runs owned them (`.deploykit-write-test-<hex8>`, alive for microseconds only)."""
    name = entry.name
    if ((name.startswith(TMP_PREFIX) and name.endswith(".tmp") and dead(_owner(name, TMP_PREFIX)))
            or re.fullmatch(r"\.deploykit-write-test-[0-9a-f]{8}", name)) and not entry.is_dir():
        entry.unlink(missing_ok=True)
        return [f"removed {entry}"]
    return []


def _unheld(path: Path) -> bool:
    """A half-made lock (`.deploykit-lock-<run>.tmp`) is locked from its creation; a journal being written
    (`.deploykit-journal-<run>.json.tmp`) belongs to a run whose lock says whether it lives."""
    if path.name.startswith(JOURNAL_PREFIX):
        return not _alive(path.parent, path.name[len(JOURNAL_PREFIX):][:12])
    fd = os.open(path, os.O_RDWR)
    try:
        return _try_lock(fd)
    finally:
        os.close(fd)


def _clean_model_dir(model_dir: Path, dead) -> list[str]:
    actions = []
    try:
        entries = list(model_dir.iterdir())
    except OSError:
        return actions
    for entry in entries:
        name = entry.name
        with contextlib.suppress(OSError):
            if name.startswith(STAGING_PREFIX) and dead(_owner(name, STAGING_PREFIX)):
                remove(entry)
                actions.append(f"removed {entry}")
            elif name.startswith(ASIDE_PREFIX) and dead(_owner(name, ASIDE_PREFIX)):
                original = _aside_original(name)
                target = model_dir / original if original else None
                if target is not None and not (target.exists() or target.is_symlink()):
                    # deploykit before journals could die between moving an entry aside and installing the
                    # new one: the aside is then the only copy of the model.
                    os.replace(entry, target)
                    actions.append(f"restored {target} from {entry.name}")
                else:
                    remove(entry)
                    actions.append(f"removed {entry}")
            elif name.isdigit() and entry.is_dir() and not entry.is_symlink():   # a version's own temporaries
                for inner in entry.iterdir():
                    if inner.name.startswith(TMP_PREFIX):
                        actions += _clean_temporary(inner, dead)
            else:
                actions += _clean_temporary(entry, dead)
    return actions


def _aside_original(name: str) -> str | None:
    """`.old-<run>-<name>` (or the older `.old-<name>-<8 hex>`) -> `<name>`."""
    rest = name[len(ASIDE_PREFIX):]
    if _RUN_ID.fullmatch(rest[:12]) and rest[12:13] == "-":
        return rest[13:] or None
    legacy = re.fullmatch(r"(.+)-[0-9a-f]{8}", rest)
    return legacy.group(1) if legacy else None


# ------------------------------------------------------------------------------------------ signals
@contextlib.contextmanager
def signals_deferred():
    """Hold Ctrl-C and SIGTERM until the block is done, then act on them (only the main thread gets signals).

    Yields a list that holds the signals caught, so the caller can say what state the block left."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = {sig: signal.signal(sig, lambda s, _f: caught.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def sigterm_interrupts():
    """SIGTERM (kill, docker stop, a CI timeout) cleans up like Ctrl-C instead of dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_sig, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def recover_around(model_file: str | Path) -> list[str]:
    """`recover` the repository a model file lies in (`<repo>/<name>/<version>/<file>`), if it lies in one;
    for commands that are given a model file rather than a repository (validate, build)."""
    path = Path(model_file)
    version = path.parent
    if not version.name.isdigit() or len(path.parents) < 3:
        return []
    return recover(version.parent.parent)
