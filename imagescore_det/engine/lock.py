"""One training run per OUTPUT_DIR: a lock file naming the pid and host that holds it.

Two runs writing one ``OUTPUT_DIR`` overwrite each other's checkpoints, ``last_checkpoint``
and round folders, and a ``--resume`` then mixes them. Rank 0 takes
``OUTPUT_DIR/imagescore_run.lock`` before anything is written (``tools/train_net.py`` before
Detectron2's ``default_setup``, :class:`~imagescore_det.engine.trainer.Trainer` at
construction) and removes it at exit.

* The lock is an exclusive ``flock`` on the file, which the kernel drops when the process
  dies, however it dies (SIGKILL included); the file's JSON (pid, host, process start time,
  command line) is what the error message shows.
* A second run refuses to start while the holder lives: :class:`OutputDirLockedError`
  names the pid, the host, the lock file and the fix.
* A lock left by a dead process of this host (pid gone, or reused by another process: the
  start time differs) is taken over with a warning.
* A lock from another host is refused (this host cannot see that process): delete the file
  when that run is over.

In one process the lock is re-entrant (tools and trainers in tests take it again).
"""
import atexit
import datetime
import errno
import json
import logging
import os
import re
import socket
import sys

try:
    import fcntl
except ImportError:  # not POSIX: the pid check alone
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_FILE = "imagescore_run.lock"
# leftovers of atomic writes killed before their rename: <name>.<8 random chars>.tmp
_TEMP_FILE = re.compile(r".+\.[A-Za-z0-9_]{8}\.tmp")


class OutputDirLockedError(RuntimeError):
    """Another run holds the OUTPUT_DIR; the message names it and the fix."""


def _start_time(pid):
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


def _alive(holder):
    """Whether the process named by a lock file of this host still runs."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    recorded, now = holder.get("start_time"), _start_time(pid)
    return recorded is None or now is None or recorded == now


def _describe(holder, path):
    if not holder:
        return f"a process that is writing {path} right now"
    text = f"pid {holder.get('pid')} on host {holder.get('host')}"
    if holder.get("started"):
        command = " ".join(map(str, holder.get("argv") or []))
        command = command if len(command) <= 120 else command[:117] + "..."
        text += f" (started {holder['started']}" + (f": {command})" if command else ")")
    return text


class _Lock:
    def __init__(self, directory, fd, path):
        self.directory, self.fd, self.path, self.count = directory, fd, path, 1

    def release(self):
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError as e:
            logger.warning("Could not remove the lock file %s: %s", self.path, e)
        finally:
            os.close(self.fd)


_held = {}  # realpath of OUTPUT_DIR -> _Lock


def _read_holder(fd):
    try:
        raw = os.pread(fd, 65536, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError):
        holder = False
    return holder if holder is None or isinstance(holder, dict) else {"unreadable": True}


def _try_flock(fd):
    """True: locked; False: another process holds it; None: the filesystem has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP (e.g. some network filesystems)


def acquire_output_dir(output_dir):
    """Take ``OUTPUT_DIR``'s lock for this process (re-entrant) or raise
    :class:`OutputDirLockedError`. Released by :func:`release_output_dir` or at exit."""
    key = os.path.realpath(output_dir)
    if key in _held:
        _held[key].count += 1
        return _held[key]
    os.makedirs(key, exist_ok=True)
    path = os.path.join(key, LOCK_FILE)
    host = socket.gethostname()
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        locked = _try_flock(fd)
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the holder removed it while we opened it: try again
            os.close(fd)
            continue
        holder = _read_holder(fd)
        try:
            _check_holder(holder, locked, host, path, key)
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": host, "start_time": _start_time(os.getpid()),
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        lock = _held[key] = _Lock(key, fd, path)
        return lock
    raise OutputDirLockedError(f"Could not take the lock {path}: it keeps being replaced. Is "
                               "another run starting in this OUTPUT_DIR?")


def _check_holder(holder, locked, host, path, output_dir):
    fix = ("Wait for that run to finish or stop it, or give this run another OUTPUT_DIR "
           "(two runs in one OUTPUT_DIR overwrite each other's checkpoints and rounds).")
    if locked is False:
        raise OutputDirLockedError(
            f"OUTPUT_DIR {output_dir} is in use by {_describe(holder, path)}: it holds the lock "
            f"file {path}. {fix}")
    if not holder or holder.get("pid") == os.getpid() and holder.get("host") == host:
        return  # a fresh file, or an empty one left by a process killed while taking it
    if holder.get("unreadable"):
        if locked:
            logger.warning("Taking over the lock %s: its content is not a lock record and no "
                           "process holds it.", path)
            return
        raise OutputDirLockedError(f"Lock file {path} is not a lock record and this filesystem "
                                   f"cannot tell whether a run holds it. Delete {path} if no "
                                   "run uses this OUTPUT_DIR.")
    if holder.get("host") != host:
        raise OutputDirLockedError(
            f"OUTPUT_DIR {output_dir} is locked by {_describe(holder, path)}, another host: "
            f"this host cannot tell whether that run still goes on (lock file {path}). {fix} "
            f"If the run on {holder.get('host')} is over, delete {path} and start again.")
    if locked is None and _alive(holder):  # no flock here: the pid is all there is
        raise OutputDirLockedError(
            f"OUTPUT_DIR {output_dir} is in use by {_describe(holder, path)} (lock file "
            f"{path}). {fix} If that process is not a training run, delete {path}.")
    logger.warning("Taking over the stale lock %s of %s, which no longer runs (killed?). "
                   "--resume continues from its last checkpoint.", path,
                   _describe(holder, path))


def release_output_dir(output_dir):
    """Give back one :func:`acquire_output_dir` of this process; the last removes the file."""
    key = os.path.realpath(output_dir)
    lock = _held.get(key)
    if lock is None:
        return
    lock.count -= 1
    if lock.count <= 0:
        del _held[key]
        lock.release()


@atexit.register
def _release_all():
    for key in list(_held):
        _held.pop(key).release()


def remove_stale_temp_files(output_dir):
    """Delete the ``*.tmp`` files that atomic writes killed before their rename left in
    ``OUTPUT_DIR`` and its round folders (call it holding the lock: no write is under way)."""
    folders = [output_dir, os.path.join(output_dir, "image_score")]
    rounds = folders[1]
    if os.path.isdir(rounds):
        folders += [os.path.join(rounds, name) for name in sorted(os.listdir(rounds))
                    if name.startswith("round_")]
    removed = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if _TEMP_FILE.fullmatch(name) and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
    if removed:
        logger.info("Removed %d unfinished temporary file(s) of an interrupted run: %s",
                    len(removed), ", ".join(removed))
    return removed
