"""``make bench``: the benchmark suite (not a test; not part of ``make test``).

Starts its own MariaDB (and PostgreSQL for the engine-level figures), builds
``BENCH_ROWS`` users (default 1,000,000) in the reference schema at release 1
and measures release 2's upgrade (``users.name`` renamed to
``display_name``, ``users.email_domain`` added and filled):

1. the online backfill's rows/s against the single-statement UPDATE of an
   offline upgrade (no triggers);
2. application latency (point reads and writes from several threads),
   idle and during migrate, and failed application queries;
3. the write cost of the sync triggers (inserts and updates);
4. pt-online-schema-change doing the equivalent change against
   ``manage db expand`` + ``manage db migrate``, under application load;
5. the backfill at BENCH_ROWS and 4 x BENCH_ROWS: time ratio, peak RSS;
6. ``manage db version`` against ``alembic current``.

Writes bench/results.json and doc/benchmarks.md.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import sqlalchemy as sa

from bench import report
from bench.app import AppLoad
from manage import database, dialects
from tests import helpers
from tests.dbservers import (MariaDBServer, PostgreSQLServer,
                             ServerUnavailable, unique_db_name)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "10"))
MIGRATIONS = ("users_display_name", "users_email_domain")
ALEMBIC = os.path.join(os.path.dirname(sys.executable), "alembic")
CHUNK = 500000
SETTLE_SECONDS = 3.0

LOAD_SQL = {
    "mysql": """INSERT INTO users (id, name, email, settings, address)
        SELECT seq, concat('user ', seq),
               concat('u', seq, '@Example', seq %% 97, '.org'),
               concat('{{"theme": "', if(seq %% 2, 'dark', 'light'),
                      '", "language": "en"}}'),
               if(seq %% 3 = 0, concat(seq, ' Elm St'), NULL)
        FROM seq_{low}_to_{high}""",
    "postgresql": """INSERT INTO users (id, name, email, settings, address)
        SELECT g, 'user ' || g, 'u' || g || '@Example' || (g %% 97) || '.org',
               '{{"theme": "' || CASE WHEN g %% 2 = 1 THEN 'dark'
                                ELSE 'light' END || '", "language": "en"}}',
               CASE WHEN g %% 3 = 0 THEN g || ' Elm St' END
        FROM generate_series({low}, {high}) AS g""",
}
PT_OSC_ALTER = ("ADD COLUMN display_name VARCHAR(255) NULL DEFAULT (name), "
                "ADD COLUMN email_domain VARCHAR(255) NULL DEFAULT "
                "(lower(substring_index(email, '@', -1)))")


def log(message):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), message))
    sys.stderr.flush()


class Run:
    """One process's wall time, exit code, output and peak RSS."""

    def __init__(self, argv, workdir):
        out_path = os.path.join(workdir, "run.out")
        with open(out_path, "w") as out:
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            self.seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        self.code = proc.returncode
        self.rss_mb = usage.ru_maxrss / 1024.0
        with open(out_path) as f:
            self.output = f.read()
        if self.code:
            raise RuntimeError("%s failed (%d):\n%s" % (
                " ".join(argv[:1] + argv[-3:]), self.code,
                self.output[-3000:]))


class Bench:
    def __init__(self, server, workdir):
        self.server = server
        self.workdir = workdir = os.path.join(workdir, server.kind)
        self.release1 = helpers.release_repository(
            os.path.join(workdir, "r1"), 1)
        self.release2 = helpers.release_repository(
            os.path.join(workdir, "r2"), 2)
        self.previous = None

    def database(self, rows, **options):
        """A database at release 1 holding ``rows`` users, its pages in
        the buffer pool; (url, config).  Drops the previous one."""
        if self.previous:
            self.server.drop_database(self.previous)
        self.previous = name = unique_db_name("bench")
        url = self.server.create_database(name)
        plugins = helpers.release_plugins(self.release1)
        manager = helpers.manager(url, repository=self.release1,
                                  plugins=plugins)
        manager.sync()
        manager.close()
        engine = database.create_engine(url)
        dialect = engine.dialect.name
        start = time.monotonic()
        for low in range(1, rows + 1, CHUNK):
            with engine.begin() as conn:
                conn.exec_driver_sql(LOAD_SQL[dialect].format(
                    low=low, high=min(low + CHUNK - 1, rows)))
        with engine.begin() as conn:
            if dialect == "postgresql":
                conn.exec_driver_sql("SELECT setval('users_id_seq', %d)"
                                     % rows)
                conn.exec_driver_sql("ANALYZE users")
            conn.exec_driver_sql("SELECT count(*), max(email) FROM users")
        engine.dispose()
        time.sleep(SETTLE_SECONDS)  # let background flushing calm down
        log("loaded %d rows into %s in %.1fs" % (
            rows, name, time.monotonic() - start))
        folder = os.path.join(self.workdir, name)
        os.makedirs(folder)
        conf = helpers.write_config(folder, url,
                                    repository=self.release2.path,
                                    data_migrations=",".join(MIGRATIONS),
                                    **options)
        return url, conf

    def manage(self, conf, *args):
        return Run([helpers.MANAGE, "--config-file", conf] + list(args),
                   os.path.dirname(conf))

    # -- 1. online backfill against the offline UPDATE ----------------------
    def offline_update(self, url, conf):
        """expand, drop the triggers, one UPDATE per migration."""
        self.manage(conf, "db", "expand")
        engine = database.create_engine(url)
        support = dialects.get(engine.dialect.name)
        with engine.begin() as conn:
            for sync in syncs():
                for sql in support.drop_sync_sql(sync.table, sync.name):
                    conn.exec_driver_sql(sql)
        moved, seconds = 0, 0.0
        for plugin in plugins(self.release2):
            start = time.monotonic()
            with engine.begin() as conn:
                moved += plugin.migrate_range(conn, None, ROWS * 10)
            seconds += time.monotonic() - start
        engine.dispose()
        return {"rows": moved, "seconds": round(seconds, 2),
                "rows_per_s": round(moved / seconds)}

    def online_backfill(self, url, conf):
        self.manage(conf, "db", "expand")
        run = self.manage(conf, "db", "migrate")
        moved = 2 * count_users(url)
        return {"rows": moved, "seconds": round(run.seconds, 2),
                "rows_per_s": round(moved / run.seconds),
                "peak_rss_mb": round(run.rss_mb, 1)}

    # -- 2 and 4. under application load -------------------------------------
    def under_load(self, url, change):
        """Idle, then ``change()``; latency of both windows."""
        with AppLoad(url, ROWS) as app:
            idle_start = time.time()
            time.sleep(IDLE_SECONDS)
            idle_end = time.time()
            phases = change()
            time.sleep(1.0)
        result = {"idle": app.stats(idle_start, idle_end)}
        for name, (start, end) in phases.items():
            result[name] = app.stats(start, end)
            result[name]["seconds"] = round(end - start, 2)
        result["errors"] = app.stats(idle_start, time.time())["errors"]
        return result

    def manage_under_load(self, url, conf):
        def change():
            t0 = time.time()
            self.manage(conf, "db", "expand")
            t1 = time.time()
            self.manage(conf, "db", "migrate", "--progress-interval", "5")
            t2 = time.time()
            return {"expand": (t0, t1), "migrate": (t1, t2),
                    "manage": (t0, t2)}
        return self.under_load(url, change)

    def pt_osc_under_load(self, url):
        tool = self.server.binaries.get("pt-online-schema-change")
        if tool is None:
            return None
        u = sa.engine.make_url(url)
        dsn = "h=127.0.0.1,P=%d,u=root,p=%s,D=%s,t=users" % (
            self.server.port, self.server.admin_password, u.database)
        argv = [tool, "--execute", "--recursion-method=none",
                "--no-version-check", "--alter-foreign-keys-method=auto",
                "--alter", PT_OSC_ALTER, dsn]

        def change():
            t0 = time.time()
            Run(argv, self.workdir)
            return {"pt_osc": (t0, time.time())}
        result = self.under_load(url, change)
        left = helpers.query(url, "SELECT count(*) FROM users WHERE "
                                  "email_domain IS NULL")[0][0]
        assert left == 0, "pt-online-schema-change left %d rows" % left
        return result

    # -- 3. trigger write cost
    # -------------------------------------------------
    def trigger_cost(self, url, rounds=3):
        """Inserts and updates with and without the sync triggers, on the
        expanded table of ``url`` (left without triggers)."""
        engine = database.create_engine(url)
        support = dialects.get(engine.dialect.name)
        inserts = min(ROWS // 5, 100000)
        updates = min(ROWS // 50, 10000)
        rates = {(op, on): [] for op in ("insert", "update")
                 for on in (False, True)}
        next_id = ROWS * 10
        for _ in range(rounds):
            for on in (False, True):
                with engine.begin() as conn:
                    for sync in syncs():
                        for sql in (support.create_sync_sql(sync) if on
                                    else support.drop_sync_sql(sync.table,
                                                               sync.name)):
                            conn.exec_driver_sql(sql)
                rates["insert", on].append(
                    insert_rate(engine, next_id, inserts))
                next_id += inserts
                rates["update", on].append(update_rate(engine, updates))
        engine.dispose()
        best = {k: max(v) for k, v in rates.items()}
        return {
            "insert_rows_per_s_without": round(best["insert", False]),
            "insert_rows_per_s_with": round(best["insert", True]),
            "update_rows_per_s_without": round(best["update", False]),
            "update_rows_per_s_with": round(best["update", True]),
            "insert_trigger_overhead": round(
                1 - best["insert", True] / best["insert", False], 3),
            "update_trigger_overhead": round(
                1 - best["update", True] / best["update", False], 3),
        }

    # -- 6. command overhead
    # ---------------------------------------------------
    def cli_overhead(self, url, conf, repeat=7):
        ini = os.path.join(self.release2.path, "migrations", "bench.ini")
        with open(os.path.join(self.release2.path, "migrations",
                               "alembic.ini")) as f:
            text = f.read()
        with open(ini, "w") as f:
            f.write(text.replace("[alembic]\n", "[alembic]\nsqlalchemy.url = "
                                 "%s\n" % url.replace("%", "%%"), 1))
        version, current = [], []
        for _ in range(repeat):
            version.append(self.manage(conf, "db", "version").seconds)
            current.append(Run([ALEMBIC, "-c", ini, "current"],
                               self.workdir).seconds)
        v, c = statistics.median(version), statistics.median(current)
        return {"manage_version_seconds": round(v, 3),
                "alembic_current_seconds": round(c, 3),
                "cli_version_vs_alembic_current": round(v / c, 3)}


def syncs():
    """Release 2's syncs of users, as its expand revision installs them:
    one group, one trigger per event."""
    from data_migrations import users_display_name, users_email_domain
    from manage.column_sync import as_group
    return [as_group([users_display_name.SYNC, users_email_domain.SYNC])]


def plugins(repository):
    return [p for p in helpers.release_plugins(repository)
            if p.name in MIGRATIONS]


def count_users(url):
    return helpers.query(url, "SELECT count(*) FROM users")[0][0]


def insert_rate(engine, first_id, rows, batch=1000):
    statement = sa.text("INSERT INTO users (id, name, email) VALUES "
                        "(:id, :name, :email)")
    start = time.monotonic()
    for low in range(first_id, first_id + rows, batch):
        with engine.begin() as conn:
            conn.execute(statement, [
                {"id": i, "name": "user %d" % i, "email": "u%d@Bench.org" % i}
                for i in range(low, low + batch)])
    return rows / (time.monotonic() - start)


def update_rate(engine, rows, batch=500):
    statement = sa.text("UPDATE users SET name = :name WHERE id = :id")
    start = time.monotonic()
    for low in range(1, rows + 1, batch):
        with engine.begin() as conn:
            for i in range(low, low + batch):
                conn.execute(statement, {"id": i, "name": "upd %d" % i})
    return rows / (time.monotonic() - start)


def machine(servers):
    info = {"python": platform.python_version(), "os": platform.platform(),
            "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["memory_gb"] = round(kb / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    for key, server in servers.items():
        info[key] = server.admin_execute("SELECT version()")[0][0]
    return info


def step(label, measure, *args):
    log(label)
    figures = measure(*args)
    log("   %s" % figures)
    return figures


def engine_figures(bench, details):
    """Figures 1, 2 and 3 on one engine; fills ``details``."""
    url, conf = bench.database(ROWS)
    offline = details["offline"] = step(
        "1. offline UPDATE (no triggers) at %d rows" % ROWS,
        bench.offline_update, url, conf)
    triggers = details["triggers"] = step(
        "3. trigger write cost", bench.trigger_cost, url)
    url, conf = bench.database(ROWS)
    online = details["online"] = step(
        "1. online backfill at %d rows" % ROWS, bench.online_backfill, url,
        conf)
    url, conf = details["url"], details["conf"] = bench.database(ROWS)
    managed = details["manage_under_load"] = step(
        "2/4. manage expand + migrate under application load",
        bench.manage_under_load, url, conf)
    return {
        "backfill_vs_offline": round(online["rows_per_s"] /
                                     offline["rows_per_s"], 3),
        "backfill_rows_per_s": online["rows_per_s"],
        "offline_rows_per_s": offline["rows_per_s"],
        "app_p50_ms_idle": managed["idle"]["p50_ms"],
        "app_p99_ms_idle": managed["idle"]["p99_ms"],
        "app_max_ms_idle": managed["idle"]["max_ms"],
        "app_p50_ms_during_migrate": managed["migrate"]["p50_ms"],
        "app_p99_ms_during_migrate": managed["migrate"]["p99_ms"],
        "app_max_ms_during_migrate": managed["migrate"]["max_ms"],
        "app_max_ms_during_expand": managed["expand"]["max_ms"],
        "app_errors": managed["errors"],
        "insert_trigger_overhead": triggers["insert_trigger_overhead"],
        "update_trigger_overhead": triggers["update_trigger_overhead"],
        "manage_seconds": managed["manage"]["seconds"],
        "manage_app_p99_ms": managed["manage"]["p99_ms"],
        "manage_app_max_ms": managed["manage"]["max_ms"],
    }


def mariadb_figures(server, workdir, results):
    bench = Bench(server, workdir)
    details = results["details"] = {}
    results.update(engine_figures(bench, details))
    online = details["online"]
    results.update(step("6. manage db version against alembic current",
                        bench.cli_overhead, details.pop("url"),
                        details.pop("conf")))
    url, _ = bench.database(ROWS)
    pt_osc = details["pt_osc_under_load"] = step(
        "4. pt-online-schema-change under application load",
        bench.pt_osc_under_load, url)
    large = details["online_4x"] = step(
        "5. online backfill at %d rows" % (4 * ROWS), bench.online_backfill,
        *bench.database(4 * ROWS))
    results.update({
        "scale_time_ratio": round(large["seconds"] / online["seconds"], 3),
        "backfill_seconds_small": online["seconds"],
        "backfill_seconds_large": large["seconds"],
        "peak_rss_mb_small": online["peak_rss_mb"],
        "peak_rss_mb_large": large["peak_rss_mb"],
    })
    if pt_osc is not None:
        results.update({
            "pt_osc_seconds": pt_osc["pt_osc"]["seconds"],
            "pt_osc_app_p99_ms": pt_osc["pt_osc"]["p99_ms"],
            "pt_osc_app_max_ms": pt_osc["pt_osc"]["max_ms"],
            "pt_osc_app_errors": pt_osc["errors"],
        })


def postgresql_figures(server, workdir):
    log("PostgreSQL")
    details = {}
    figures = engine_figures(Bench(server, workdir), details)
    del details["url"], details["conf"]
    figures["details"] = details
    return figures


def main():
    results = {"rows": ROWS, "idle_seconds": IDLE_SECONDS}
    servers = {}
    with tempfile.TemporaryDirectory(prefix="manage-bench-") as workdir:
        try:
            servers["mariadb"] = MariaDBServer(
                extra_args=["--innodb-buffer-pool-size=2G"]).start()
            try:
                servers["postgresql"] = PostgreSQLServer(
                    extra_args=["-c", "shared_buffers=1GB"]).start()
            except (ServerUnavailable, RuntimeError) as exc:
                log("PostgreSQL figures skipped: %s" % exc)
            results["machine"] = machine(servers)
            started = time.monotonic()
            mariadb_figures(servers["mariadb"], workdir, results)
            if "postgresql" in servers and \
                    os.environ.get("BENCH_POSTGRESQL", "1") != "0":
                results["postgresql"] = postgresql_figures(
                    servers["postgresql"], workdir)
            results["bench_seconds"] = round(time.monotonic() - started)
        finally:
            for server in servers.values():
                server.stop()
    results["targets"] = report.targets(results)
    with open(os.path.join(ROOT, "bench", "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(ROOT, "doc", "benchmarks.md"), "w") as f:
        f.write(report.markdown(results))
    log("wrote bench/results.json and doc/benchmarks.md")
    missed = [t for t in results["targets"] if not t["met"]]
    for t in missed:
        log("target missed: %s" % t["what"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
