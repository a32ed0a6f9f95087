"""Throwaway MariaDB and PostgreSQL servers for tests and benchmarks.

Each server lives in its own temporary folder (datadir, socket, log), listens
on 127.0.0.1 on a free port and
is stopped by signalling the one process this module started.  Pure stdlib +
SQLAlchemy.

    with MariaDBServer() as server:
        # the app user's SQLAlchemy URL
        url = server.create_database(unique_db_name("demo"))
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

__all__ = [
    "MariaDBServer",
    "PostgreSQLServer",
    "ServerUnavailable",
    "free_port",
    "unique_db_name",
]

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class ServerUnavailable(Exception):
    """The server cannot be started here (binaries missing, ...); the message
    says why.
    """


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_db_name(prefix: str = "test") -> str:
    """A fresh database name, valid unquoted on MariaDB and PostgreSQL (lower
    case, <= 63 chars).
    """
    prefix = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:50]
    return f"{prefix}_{secrets.token_hex(4)}"


def _which(name: str, dirs=()) -> str | None:
    path = os.pathsep.join(
        [
            *map(str, dirs),
            os.environ.get("PATH", ""),
            "/usr/sbin",
            "/usr/local/sbin",
        ]
    )
    return shutil.which(name, path=path)


def _version_key(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path)]


class _Server:
    """Common parts: temp folder, port, start/wait/stop of one process, admin
    SQL, context manager.
    """

    kind = "server"
    stop_signal = signal.SIGTERM
    required: tuple[str, ...] = ()  # binaries start() needs
    optional: tuple[
        str, ...
    ] = ()  # client tools reported in .binaries when present
    host = "127.0.0.1"
    admin_user = "root"
    app_user = "app"
    start_timeout = 30.0
    stop_timeout = 30.0
    drop_sql = "DROP DATABASE IF EXISTS {}"

    def __init__(self, base_dir=None, extra_args=()):
        self.base_dir = base_dir
        self.extra_args = list(extra_args)  # extra server command-line options
        self.admin_password = secrets.token_hex(12)
        self.app_password = secrets.token_hex(12)
        self.binaries: dict[str, str] = {}
        self.tmpdir: Path | None = None
        self.log_path: Path | None = (
            None  # the server's stdout/stderr (its error log)
        )
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = (
            None  # kept after stop() so callers can check it is gone
        )
        self.port: int | None = None
        self._owner = os.getpid()
        self._engines: dict[str | None, sa.Engine] = {}

    # -- subclass hooks -------------------------------------------------------
    # ------------------------
    def _search_dirs(self) -> list[str]:
        return []

    def _prepare(self) -> None:  # create the datadir
        raise NotImplementedError

    def _command(self) -> list[str]:  # server command line for self.port
        raise NotImplementedError

    def _setup(self) -> None:  # SQL run once the server answers
        pass

    def _quote(self, name: str) -> str:
        raise NotImplementedError

    def _url(self, user: str, password: str, database: str | None) -> str:
        raise NotImplementedError

    def _socket_url(
        self,
    ) -> str:  # superuser over the unix socket, for the readiness probe
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------
    # ------------------------
    @property
    def datadir(self) -> Path | None:
        return self.tmpdir and self.tmpdir / "data"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running:
            return self
        self._find_binaries()
        self.tmpdir = Path(
            tempfile.mkdtemp(prefix=f"manage-{self.kind}-", dir=self.base_dir)
        )
        self.log_path = self.tmpdir / "server.log"
        atexit.register(self.stop)
        try:
            self._prepare()
            for attempt in range(
                3
            # another process may grab the free port before the server binds it
            ):
                self.port = free_port()
                if self._launch():
                    break
            else:
                raise RuntimeError(
                    f"{self.kind}: no free port after 3 attempts\n"
                    f"{self._log_tail()}"
                )
            self._setup()
        except BaseException:
            self.stop()
            raise
        return self

    def _find_binaries(self) -> None:
        dirs = self._search_dirs()
        found = {
            n: p
            for n in self.required + self.optional
            if (p := _which(n, dirs))
        }
        missing = [n for n in self.required if n not in found]
        if missing:
            where = ", ".join([*dirs, "PATH", "/usr/sbin"])
            raise ServerUnavailable(
                f"{self.kind}: cannot find {', '.join(missing)} "
                f"(searched {where}); "
                "run tools/install-db-servers.sh as root"
            )
        self.binaries = found

    def _run(self, cmd: list[str], **kw) -> None:
        res = subprocess.run(
            cmd,
            cwd=self.tmpdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kw,
        )
        if res.returncode:
            raise RuntimeError(
                f"{self.kind}: {' '.join(cmd)} failed ({res.returncode}):\n"
                f"{res.stdout[-3000:]}"
            )

    def _popen_kwargs(self) -> dict:
        return {}

    def _launch(self) -> bool:
        """Start the server and wait until it answers; False if its port was
        taken meanwhile.
        """
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                self._command(),
                cwd=self.tmpdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # a Ctrl-C in the terminal must not reach the server
                start_new_session=True,
                **self._popen_kwargs(),
            )
        self.pid = self.proc.pid
        # Probe our own unix socket, not the TCP port: whatever else took the
        # port could accept and stay silent.
        probe = sa.create_engine(
            self._socket_url(),
            poolclass=NullPool,
            connect_args={"connect_timeout": 5},
        )
        deadline, error = time.monotonic() + self.start_timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, tail, self.proc = (
                    self.proc.returncode,
                    self._log_tail(),
                    None,
                )
                if "Address already in use" in tail:
                    return False
                raise RuntimeError(
                    f"{self.kind} exited at startup (exit code {code}):\n"
                    f"{tail}"
                )
            try:
                with probe.connect():
                    pass
            except sa.exc.DBAPIError as exc:
                error = exc
                time.sleep(0.05)
                continue
            with self._engine(
                None
            ).connect():  # and the admin URL over TCP works
                return True
        raise RuntimeError(
            f"{self.kind} did not answer within {self.start_timeout:.0f}s "
            f"(last error: {error}):\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-lines:]
            )
        except (OSError, AttributeError):
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server this object started (its PID only) and remove its
        temporary folder.
        """
        if (
            os.getpid() != self._owner
        ):  # a forked child must not stop its parent's server
            return
        atexit.unregister(self.stop)
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(self.stop_signal)
                try:
                    self.proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = (
            f"pid={self.pid} port={self.port}" if self.running else "stopped"
        )
        return f"<{type(self).__name__} {state}>"

    # -- SQL ------------------------------------------------------------------
    # --------------------------
    def admin_url(self, database: str | None = None) -> str:
        return self._url(self.admin_user, self.admin_password, database)

    def app_url(self, database: str | None = None) -> str:
        return self._url(self.app_user, self.app_password, database)

    def _engine(self, database: str | None) -> sa.Engine:
        if database not in self._engines:
            self._engines[database] = sa.create_engine(
                self.admin_url(database),
                poolclass=NullPool,
                isolation_level="AUTOCOMMIT",
                connect_args={"connect_timeout": 5},
            )
        return self._engines[database]

    def admin_execute(self, sql: str, database: str | None = None):
        """Run one statement as the superuser (autocommit); return its rows as
        a list, or None.
        """
        with self._engine(database).connect() as conn:
            cursor = (
                conn.connection.dbapi_connection.cursor()
            )  # no parameters: a literal % stays literal
            try:
                cursor.execute(sql)
                return (
                    [tuple(row) for row in cursor.fetchall()]
                    if cursor.description
                    else None
                )
            finally:
                cursor.close()

    def create_database(self, name: str) -> str:
        """Create database `name` for the app user; return the app user's
        SQLAlchemy URL for it.
        """
        raise NotImplementedError

    def drop_database(self, name: str) -> None:
        if (engine := self._engines.pop(name, None)) is not None:
            engine.dispose()
        self.admin_execute(self.drop_sql.format(self._quote(name)))


class MariaDBServer(_Server):
    kind = "mariadb"
    required = ("mariadbd", "mariadb-install-db")
    optional = (
        "mariadb",
        "mysql",
        "mariadb-dump",
        "mysqldump",
        "mariadb-admin",
        "pt-online-schema-change",
    )

    def __init__(
        self,
        base_dir=None,
        log_bin=True,
        trust_function_creators=True,
        extra_args=(),
    ):
        super().__init__(base_dir, extra_args)
        self.log_bin = log_bin
        self.trust_function_creators = trust_function_creators

    @property
    def socket(self) -> Path | None:
        return self.tmpdir and self.tmpdir / "mysqld.sock"

    def _prepare(self) -> None:
        # A temp folder of its own: servers of parallel test runs must not
        # share /tmp's #sql files.
        (self.tmpdir / "tmp").mkdir(exist_ok=True)
        self._run(
            [
                self.binaries["mariadb-install-db"],
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--tmpdir={self.tmpdir / 'tmp'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]
        )
        # Runs at server startup: passwords for root (socket and TCP) and the
        # app user, who gets no SUPER.
        pw, app = self.admin_password, self.app_password
        (self.tmpdir / "init.sql").write_text(
            f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n"
            f"GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
            f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';\n"
            f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{pw}';\n"
            f"CREATE USER '{self.app_user}'@'%' IDENTIFIED BY '{app}';\n"
            f"GRANT PROCESS ON *.* TO '{self.app_user}'@'%';\n"
        )

    def _command(self) -> list[str]:
        cmd = [
            self.binaries["mariadbd"],
            "--no-defaults",
            *(["--user=root"] if IS_ROOT else []),
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={self.tmpdir / 'mysqld.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--tmpdir={self.tmpdir / 'tmp'}",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            f"--init-file={self.tmpdir / 'init.sql'}",
        ]
        if self.log_bin:
            cmd += ["--log-bin=binlog", "--server-id=1"]
        if self.trust_function_creators:
            cmd.append("--log-bin-trust-function-creators=1")
        return cmd + self.extra_args

    def _url(self, user, password, database):
        return sa.URL.create(
            "mysql+pymysql",
            user,
            password,
            self.host,
            self.port,
            database,
            {"charset": "utf8mb4"},
        ).render_as_string(hide_password=False)

    def _socket_url(self):
        return sa.URL.create(
            "mysql+pymysql",
            "root",
            self.admin_password,
            "localhost",
            query={"unix_socket": str(self.socket)},
        ).render_as_string(hide_password=False)

    def _quote(self, name):
        return "`" + name.replace("`", "``") + "`"

    def create_database(self, name):
        self.admin_execute(f"CREATE DATABASE {self._quote(name)}")
        pattern = re.sub(
            r"([_%\\])", r"\\\1", name
        )  # GRANT treats _ and % in a database name as wildcards
        self.admin_execute(
            f"GRANT ALL ON {self._quote(pattern)}.* TO '{self.app_user}'@'%'"
        )
        return self.app_url(name)


class PostgreSQLServer(_Server):
    kind = "postgresql"
    stop_signal = (
        signal.SIGINT
    )  # fast shutdown; SIGTERM would wait for clients to disconnect
    required = ("postgres", "initdb")
    optional = ("psql", "pg_dump", "pg_restore", "pg_ctl", "pg_isready")
    admin_user = "postgres"
    # FORCE also ends the app's open sessions
    drop_sql = "DROP DATABASE IF EXISTS {} WITH (FORCE)"
    versions = ("15",)  # preferred; any other installed version is a fallback

    @property
    def socket(self) -> Path | None:
        """The folder of the unix socket (libpq's `host`)."""
        return self.tmpdir

    def _search_dirs(self):
        dirs = [f"/usr/lib/postgresql/{v}/bin" for v in self.versions]
        dirs += sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=_version_key,
            reverse=True,
        )
        if pg_config := shutil.which("pg_config"):
            try:
                dirs.append(
                    subprocess.run(
                        [pg_config, "--bindir"], capture_output=True, text=True
                    ).stdout.strip()
                )
            except OSError:
                pass
        return list(dict.fromkeys(d for d in dirs if d and os.path.isdir(d)))

    def _popen_kwargs(self):
        # initdb and postgres refuse to run as root: run them directly as the
        # postgres OS user, so the PID we
        # hold is the postmaster's own.
        return (
            {"user": "postgres", "group": "postgres", "extra_groups": []}
            if IS_ROOT
            else {}
        )

    def _prepare(self):
        if IS_ROOT:
            shutil.chown(self.tmpdir, "postgres", "postgres")
        pwfile = self.tmpdir / "pw"
        pwfile.write_text(self.admin_password + "\n")
        if IS_ROOT:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            [
                self.binaries["initdb"],
                "-D",
                str(self.datadir),
                "-U",
                self.admin_user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ],
            **self._popen_kwargs(),
        )
        pwfile.unlink()

    def _command(self):
        return [
            self.binaries["postgres"],
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-k",
            str(self.tmpdir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            *self.extra_args,
        ]

    def _setup(self):
        self.admin_execute(
            f"CREATE ROLE {self.app_user} LOGIN PASSWORD '{self.app_password}'"
        )

    def _url(self, user, password, database):
        return sa.URL.create(
            "postgresql+psycopg",
            user,
            password,
            self.host,
            self.port,
            database or "postgres",
        ).render_as_string(hide_password=False)

    def _socket_url(self):
        return sa.URL.create(
            "postgresql+psycopg",
            self.admin_user,
            database="postgres",
            query={"host": str(self.socket), "port": str(self.port)},
        ).render_as_string()

    def _quote(self, name):
        return '"' + name.replace('"', '""') + '"'

    def create_database(self, name):
        self.admin_execute(
            f"CREATE DATABASE {self._quote(name)} OWNER {self.app_user}"
        )
        return self.app_url(name)
