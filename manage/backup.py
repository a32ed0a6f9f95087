"""Backups and restores: the parts every dialect shares.

How a database is copied is per dialect (``backup``, ``verify_backup`` and
``restore`` of :class:`manage.dialects.base.DialectSupport`); here are:

* file naming and permissions (backups are created readable by the owner
  only) and the **manifest** written beside each backup once it is complete
  (``<backup>.manifest``: its size and SHA-256, the dialect, the database and
  the revisions it holds), which a restore checks before anything changes;
* **credentials** for the client tools in files that have no name in any
  folder (``/dev/fd/N`` of an unlinked file): nothing holding the password
  is left behind, even when ``manage`` is killed with SIGKILL;
* **child processes** that end with ``manage``: each tool runs in a process
  group of its own, is killed when ``manage`` dies (``PR_SET_PDEATHSIG``), and
  is terminated and waited for when ``manage`` is interrupted, before the run
  lock is released;
* **interruptions**: during a backup or restore SIGTERM and SIGHUP raise
  :class:`Signalled` (a ``KeyboardInterrupt``) as Ctrl-C does, so that the
  clean-up runs;
* the **being-restored mark** (table ``manage_restore``) for databases whose
  restore cannot be one transaction (MySQL/MariaDB): while it exists, every
  command but ``restore`` refuses and says what to run.
"""

import contextlib
import ctypes
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from typing import Iterator, List, Optional, Sequence, Tuple

import sqlalchemy as sa

from manage.exceptions import (BackupError, ConfigError, DatabaseError,
                               RestoreIncompleteError)

PRIVATE = 0o600
MANIFEST_SUFFIX = ".manifest"
MANIFEST_FORMAT = 1
#: The table that marks a database as being restored (MySQL/MariaDB).
MARK_TABLE = "manage_restore"


# -- files -------------------------------------------------------------------
def new_backup_file(directory: str, database_name: Optional[str],
                    suffix: str) -> str:
    """Create ``<directory>/<database>-<UTC time><suffix>``, empty, 0600.

    The folder is created (0700) when missing; an existing file is never
    overwritten.
    """
    directory = os.path.abspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError("backup folder %s is not a folder" % directory)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError("cannot create the backup folder %s: %s"
                          % (directory, exc.strerror)) from None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y%m%dT%H%M%SZ")
    base = "%s-%s" % (re.sub(r"[^A-Za-z0-9_.-]", "_", database_name or "db"),
                      stamp)
    for n in range(1, 1000):
        path = os.path.join(directory, base + ("" if n == 1 else "-%d" % n)
                            + suffix)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError("cannot write a backup in %s: %s"
                              % (directory, exc.strerror)) from None
        os.fchmod(fd, PRIVATE)
        os.close(fd)
        return path
    raise ConfigError("too many backups named %s in %s" % (base, directory))


def remove_quietly(*paths: str) -> None:
    """Remove files that may not exist."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def check_backup_file(path: str, magics: Sequence[bytes], kind: str) -> None:
    """Refuse a restore from a file that is missing, empty, not a regular
    file, or not such a backup (none of ``magics`` in its first bytes)."""
    if not os.path.exists(path):
        raise BackupError("backup file %s does not exist" % path)
    if not os.path.isfile(path):
        raise BackupError("backup file %s is not a file; nothing was "
                          "restored" % path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise BackupError("cannot read backup file %s: %s; nothing was "
                          "restored" % (path, exc.strerror)) from None
    if not head:
        raise BackupError("backup file %s is empty; nothing was restored"
                          % path)
    if not any(m in head for m in magics):
        raise BackupError("%s is not %s; nothing was restored" % (path, kind))


def damaged(path: str, why: str) -> BackupError:
    """The refusal of a backup that is incomplete or corrupt."""
    return BackupError("backup file %s is damaged or incomplete (%s); "
                       "nothing was restored" % (path, why))


# -- the manifest ------------------------------------------------------------
@dataclasses.dataclass
class Manifest:
    """What ``manage db backup`` records beside a complete backup."""
    dialect: str
    database: Optional[str]
    size: int
    sha256: str
    #: Alembic heads of the database when it was backed up.
    revisions: List[str]
    created_at: str = ""
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2,
                          sort_keys=True) + "\n"


def manifest_path(path: str) -> str:
    return path + MANIFEST_SUFFIX


def digest(path: str) -> Tuple[int, str]:
    """Size and SHA-256 (hex) of a file."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def write_manifest(path: str, dialect: str, database: Optional[str],
                   revisions: Sequence[str]) -> str:
    """Write the manifest of the complete backup ``path`` (0600); written
    last, so that a backup without one is known to be incomplete."""
    size, sha = digest(path)
    manifest = Manifest(
        dialect, database, size, sha, sorted(revisions),
        datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"))
    target = manifest_path(path)
    partial = target + ".partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    with os.fdopen(fd, "w") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, target)
    return target


def read_manifest(path: str) -> Optional[Manifest]:
    """The manifest beside ``path``; None when there is none."""
    target = manifest_path(path)
    if not os.path.exists(target):
        return None
    try:
        with open(target) as f:
            data = json.load(f)
        fields = {f.name for f in dataclasses.fields(Manifest)}
        manifest = Manifest(**{k: v for k, v in data.items() if k in fields})
        if not isinstance(manifest.size, int) or not isinstance(
                manifest.sha256, str) or not isinstance(
                    manifest.revisions, list):
            raise TypeError("wrong types")
    except (OSError, ValueError, TypeError) as exc:
        raise BackupError("the manifest %s of backup %s cannot be read (%s); "
                          "nothing was restored" % (
                              target, path, getattr(exc, "strerror", None)
                              or exc)) from None
    return manifest


def verify_manifest(path: str, manifest: Manifest, dialect: str) -> None:
    """Refuse a backup whose bytes are not those its manifest describes."""
    if manifest.dialect != dialect:
        raise BackupError("%s is a backup of a %s database, not of this %s "
                          "database; nothing was restored"
                          % (path, manifest.dialect, dialect))
    size, sha = digest(path)
    if size != manifest.size:
        raise damaged(path, "%d bytes, its manifest says %d"
                      % (size, manifest.size))
    if sha != manifest.sha256:
        raise damaged(path, "its SHA-256 differs from its manifest's")


# -- credentials -------------------------------------------------------------
@contextlib.contextmanager
def secret_file(text: str) -> Iterator[Tuple[int, str]]:
    """A file holding ``text`` that has no name in any folder: ``(fd,
    "/dev/fd/<fd>")``.  Pass ``fd`` to the child (``pass_fds``); the tool
    opens the path.  The file is unlinked before any tool starts (created
    with ``O_TMPFILE`` where the kernel has it), so nothing is left behind
    even if manage is killed."""
    f = tempfile.TemporaryFile(prefix="manage-")
    try:
        os.fchmod(f.fileno(), PRIVATE)
        f.write(text.encode("utf-8"))
        f.flush()
        yield f.fileno(), "/dev/fd/%d" % f.fileno()
    finally:
        f.close()


@contextlib.contextmanager
def mysql_option_file(url) -> Iterator[Tuple[int, str]]:
    """A MySQL client option file with the URL's credentials: ``(fd,
    path)`` of a :func:`secret_file`."""
    def value(v):
        return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')
    lines = ["[client]"]
    for key, val in (("user", url.username), ("password", url.password),
                     ("host", url.host), ("port", url.port),
                     ("socket", url.query.get("unix_socket"))):
        if val:
            lines.append("%s=%s" % (key, value(val)))
    with secret_file("\n".join(lines) + "\n") as found:
        yield found


@contextlib.contextmanager
def pg_environment(url) -> Iterator[Tuple[dict, Tuple[int, ...]]]:
    """Environment for libpq tools and the fds to pass them: connection from
    PG* variables, the password from a :func:`secret_file` PGPASSFILE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    host = url.query.get("host") or url.host
    for key, val in (("PGHOST", host), ("PGPORT", url.port),
                     ("PGUSER", url.username), ("PGDATABASE", url.database),
                     ("PGSSLMODE", url.query.get("sslmode"))):
        if val:
            env[key] = str(val)

    if not url.password:
        yield env, ()
        return

    def field(v):
        return str(v or "*").replace("\\", "\\\\").replace(":", "\\:")
    line = ":".join(field(v) for v in (host, url.port, url.database,
                                       url.username, url.password))
    with secret_file(line + "\n") as (fd, path):
        env["PGPASSFILE"] = path
        yield env, (fd,)


# -- interruptions -----------------------------------------------------------
class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during a backup or restore."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_of(exc: BaseException) -> int:
    """The signal an interruption stands for (Ctrl-C: SIGINT)."""
    return getattr(exc, "signum", signal.SIGINT)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """For the block, SIGTERM and SIGHUP raise :class:`Signalled` in the main
    thread (as SIGINT raises KeyboardInterrupt), so that children are ended
    and files removed; the previous handlers come back afterwards.  A no-op
    outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Signalled(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- client tools ------------------------------------------------------------
def find_tool(names: Sequence[str], package: str) -> str:
    """The first client tool of ``names`` on PATH."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError("%s is needed for backups and restores of this "
                      "database; install %s" % (" or ".join(names), package))


_PR_SET_PDEATHSIG = 1
try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def _child_setup(parent: int):
    """In the child, before exec: die with manage (Linux)."""
    def setup():
        if _LIBC is not None and hasattr(_LIBC, "prctl"):
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # manage died before prctl
            os._exit(1)
    return setup


class Tool:
    """One client tool run by manage, in its own process group, killed when
    manage dies; :meth:`stop` ends the group and waits for it."""

    def __init__(self, argv: List[str], doing: str, stdin=None, stdout=None,
                 env=None, pass_fds: Sequence[int] = ()):
        self.argv, self.doing = argv, doing
        self.stderr = tempfile.TemporaryFile(prefix="manage-")
        try:
            self.proc = subprocess.Popen(
                argv, stdin=stdin, stdout=stdout, stderr=self.stderr, env=env,
                pass_fds=tuple(pass_fds), start_new_session=True,
                preexec_fn=_child_setup(os.getpid()))
        except OSError as exc:
            self.stderr.close()
            raise ConfigError("cannot run %s: %s" % (argv[0], exc.strerror)) \
                from None

    def stop(self) -> None:
        """Terminate the tool's process group (SIGTERM, then SIGKILL after
        5 s) and wait for the tool."""
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # what it left running
        self.close()

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.stderr.close()

    def wait(self) -> int:
        """Wait for the tool; raise DatabaseError with its last error line
        when it failed."""
        code = self.proc.wait()
        if code:
            self.stderr.seek(0)
            err = self.stderr.read().decode("utf-8", "replace")
            lines = [line.strip() for line in err.splitlines()
                     if line.strip()]
            raise DatabaseError("%s failed (%s exited %d): %s" % (
                self.doing, os.path.basename(self.argv[0]), code,
                lines[-1] if lines else "no message"))
        return code


@contextlib.contextmanager
def tools() -> Iterator[List[Tool]]:
    """A list to start tools into; on any exception (an interruption too)
    every tool still running is stopped before the exception goes on."""
    started: List[Tool] = []
    try:
        yield started
    except BaseException:
        for tool in reversed(started):
            tool.stop()
        raise
    else:
        for tool in started:
            tool.close()


def run_tool(argv: List[str], doing: str, stdin_path: Optional[str] = None,
             stdout_path: Optional[str] = None, env=None,
             stdin_prefix: bytes = b"", stdin_suffix: bytes = b"",
             pass_fds: Sequence[int] = (), stdin_tool: Optional[list] = None
             ) -> None:
    """Run a client tool; a failure becomes one DatabaseError line.

    ``stdout_path`` receives the output (the file must exist: it keeps its
    mode).  The tool's input is ``stdin_prefix``, then the file
    ``stdin_path`` or the output of the tool ``stdin_tool`` (``[argv,
    doing]``, run without credentials), then ``stdin_suffix``, which is
    written only once all that came before was read and the source tool
    succeeded.  An interruption stops both tools before it goes on.
    """
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        with tools() as started:
            source = None
            if stdin_tool is not None:
                source = Tool(stdin_tool[0], stdin_tool[1],
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE)
                started.append(source)
            tool = Tool(argv, doing, stdin=subprocess.PIPE, stdout=out,
                        env=env, pass_fds=pass_fds)
            started.append(tool)
            try:
                _feed(tool, stdin_prefix, stdin_path, source, stdin_suffix)
            except BrokenPipeError:
                pass  # the tool stopped reading: its stderr says why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    tool.proc.stdin.close()
                if source is not None:  # it must not block on a full pipe
                    source.proc.stdout.close()
            tool.wait()  # the loader's error first: it stopped first
            if source is not None:
                source.wait()
    finally:
        if stdout_path:
            out.close()


def _feed(tool: Tool, prefix: bytes, path: Optional[str],
          source: Optional[Tool], suffix: bytes) -> None:
    sink = tool.proc.stdin
    if prefix:
        sink.write(prefix)
    if path:
        with open(path, "rb") as f:
            shutil.copyfileobj(f, sink, 1 << 20)
    if source is not None:
        shutil.copyfileobj(source.proc.stdout, sink, 1 << 20)
        source.wait()  # the suffix only after a complete, successful source
    if suffix:
        sink.write(suffix)


# -- the being-restored mark -------------------------------------------------
mark_metadata = sa.MetaData()
mark_table = sa.Table(
    MARK_TABLE, mark_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("backup_file", sa.Text, nullable=False),
    sa.Column("safety_backup", sa.Text, nullable=True),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("owner", sa.Text, nullable=True),
)


def mark_restoring(engine, backup_file: str, safety_backup: Optional[str],
                   owner: str) -> None:
    """Mark the database as being restored (committed)."""
    with engine.begin() as conn:
        mark_table.create(conn, checkfirst=True)
        conn.execute(mark_table.delete())
        conn.execute(mark_table.insert().values(
            id=1, backup_file=backup_file, safety_backup=safety_backup,
            started_at=datetime.datetime.now(datetime.timezone.utc).replace(
                tzinfo=None), owner=owner))


def restoring_mark(connection) -> Optional[dict]:
    """The mark of an unfinished restore, or None."""
    if not sa.inspect(connection).has_table(MARK_TABLE):
        return None
    row = connection.execute(sa.select(mark_table)).first()
    return dict(row._mapping) if row is not None else {
        "backup_file": None, "safety_backup": None, "started_at": None}


def unfinished_restore_message(mark: dict, doing: str = "") -> str:
    """What every command says while the database is marked."""
    what = mark.get("backup_file") or "a backup"
    text = ("%sthe database is partly restored: a restore from %s started%s "
            "and did not finish, so its tables are incomplete. Run `manage "
            "db restore %s` again" % (
                doing, what, " at %s UTC" % mark["started_at"]
                if mark.get("started_at") else "", what))
    if mark.get("safety_backup"):
        text += (", or go back to the database as it was before it with "
                 "`manage db restore %s`" % mark["safety_backup"])
    return text


def refuse_if_restoring(connection) -> None:
    """Raise RestoreIncompleteError while the database is marked."""
    mark = restoring_mark(connection)
    if mark is not None:
        raise RestoreIncompleteError(unfinished_restore_message(mark))
