"""Backups: the parts every dialect shares.

How a database is copied is per dialect (``backup`` and ``restore`` of
:class:`manage.dialects.base.DialectSupport`); here are file naming,
permissions (backups and credential files are created readable by the owner
only), credential files that keep the password off every command line, and
running the client tools with their errors turned into one line.
"""

import contextlib
import datetime
import os
import re
import shutil
import subprocess
import tempfile

from manage.exceptions import ConfigError, DatabaseError

PRIVATE = 0o600


def new_backup_file(directory, database_name, suffix):
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


def check_backup_file(path, magics, kind):
    """Refuse a restore from a file that is missing or not such a backup
    (none of ``magics`` in its first bytes)."""
    if not os.path.isfile(path):
        raise ConfigError("backup file %s does not exist" % path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise ConfigError("cannot read backup file %s: %s"
                          % (path, exc.strerror)) from None
    if not any(m in head for m in magics):
        raise ConfigError("%s is not %s; nothing was restored" % (path, kind))


@contextlib.contextmanager
def private_file(text, suffix=""):
    """A temporary file only the owner can read, removed after the block."""
    fd, path = tempfile.mkstemp(prefix="manage-", suffix=suffix)
    try:
        os.fchmod(fd, PRIVATE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        yield path
    finally:
        os.unlink(path)


def find_tool(names, package):
    """The first client tool of ``names`` on PATH."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError("%s is needed for backups and restores of this "
                      "database; install %s" % (" or ".join(names), package))


def run_tool(argv, doing, stdin_path=None, stdout_path=None, env=None,
             stdin_prefix=b""):
    """Run a client tool; a failure becomes one DatabaseError line.

    ``stdout_path`` receives the output (the file must exist: it keeps its
    mode); ``stdin_path`` is fed to the tool after ``stdin_prefix``.
    """
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        if stdout_path:
            out.close()
        raise ConfigError("cannot run %s: %s" % (argv[0], exc.strerror)) \
            from None
    try:
        with contextlib.ExitStack() as stack:
            if stdin_prefix:
                proc.stdin.write(stdin_prefix)
            if stdin_path:
                source = stack.enter_context(open(stdin_path, "rb"))
                shutil.copyfileobj(source, proc.stdin, 1 << 20)
    except BrokenPipeError:
        pass  # the tool stopped reading: its stderr says why
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        err = proc.stderr.read().decode("utf-8", "replace")
        proc.wait()
        if stdout_path:
            out.close()
    if proc.returncode:
        lines = [line.strip() for line in err.splitlines() if line.strip()]
        raise DatabaseError("%s failed (%s exited %d): %s" % (
            doing, os.path.basename(argv[0]), proc.returncode,
            lines[-1] if lines else "no message"))


def mysql_option_file(url):
    """A MySQL client option file with the URL's credentials (0600)."""
    def value(v):
        return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')
    lines = ["[client]"]
    for key, val in (("user", url.username), ("password", url.password),
                     ("host", url.host), ("port", url.port),
                     ("socket", url.query.get("unix_socket"))):
        if val:
            lines.append("%s=%s" % (key, value(val)))
    return private_file("\n".join(lines) + "\n", ".cnf")


@contextlib.contextmanager
def pg_environment(url):
    """Environment for libpq tools: connection from PG* variables, the
    password from a private PGPASSFILE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    host = url.query.get("host") or url.host
    for key, val in (("PGHOST", host), ("PGPORT", url.port),
                     ("PGUSER", url.username), ("PGDATABASE", url.database),
                     ("PGSSLMODE", url.query.get("sslmode"))):
        if val:
            env[key] = str(val)

    if not url.password:
        yield env
        return

    def field(v):
        return str(v or "*").replace("\\", "\\\\").replace(":", "\\:")
    line = ":".join(field(v) for v in (host, url.port, url.database,
                                       url.username, url.password))
    with private_file(line + "\n", ".pgpass") as path:
        env["PGPASSFILE"] = path
        yield env
