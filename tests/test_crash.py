"""Crash safety: SIGKILL the `manage` process at random moments.

A database of release 1 holds rows.  `manage db expand`, `migrate` and
`contract` (release 3, the bundled code) run as child processes that are
killed with SIGKILL at random moments, then run again until they finish.
After every kill: no row is lost, every old value is intact, every new value
is either not written yet (NULL) or exactly what an uninterrupted run writes,
and `version`/`check` answer (an unfinished step shows as interrupted).  At
the end of each round the schema and every row equal those of an
uninterrupted run.  At least 21 kills per engine; MANAGE_CRASH_SEED replays
a run.
"""

import collections
import json
import os
import random
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa

from manage import database
from tests import helpers
from tests.conftest import new_database

ENGINES = [e for e in ("sqlite", "mysql")
           if e in os.environ.get("MANAGE_TEST_ENGINES", "sqlite,mysql")]
PHASES = ("expand", "migrate", "contract")
USERS, PROJECTS = 600, 300
KILLS_PER_PHASE, MIN_KILLS = 3, 21
# Small batches: migrate commits often, so kills land between and inside.
MIGRATION = dict(batch_size=25, batch_min_size=25, batch_max_size=25)


def seed(url):
    """Release 1 with rows; returns the old values, keyed by table."""
    helpers.deploy(url, 1).sync()
    users = {i: ("user %d" % i, "U%d@Example%d.ORG" % (i, i % 7),
                 json.dumps({"theme": "dark" if i % 2 else "light",
                             "language": "l%d" % (i % 5), "keep": i}),
                 "%d Elm St" % i if i % 3 else None)
             for i in range(1, USERS + 1)}
    projects = {i: (1 + i % USERS, "project %d" % i,
                    None if i % 10 == 0 else bool(i % 2))
                for i in range(1, PROJECTS + 1)}
    engine = database.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO users (id, name, email, settings, address) VALUES "
            "(:id, :name, :email, :settings, :address)"),
            [dict(id=i, name=n, email=e, settings=s, address=a)
             for i, (n, e, s, a) in users.items()])
        conn.execute(sa.text(
            "INSERT INTO projects (id, owner_id, title, is_public) VALUES "
            "(:id, :owner, :title, :pub)"),
            [dict(id=i, owner=o, title=t, pub=p)
             for i, (o, t, p) in projects.items()])
    engine.dispose()
    return {"users": users, "projects": projects}


def contents(url):
    """Every row of the application tables, comparable (surrogate ids of
    user_addresses left out: rolled-back inserts consume MySQL ids)."""
    engine = database.create_engine(url)
    try:
        with engine.connect() as conn:
            out = {}
            for table in ("users", "projects", "user_addresses"):
                if not sa.inspect(conn).has_table(table):
                    continue
                rows = conn.execute(sa.text("SELECT * FROM %s" % table))
                out[table] = {_key(table, r): r for r in
                              (dict(row._mapping) for row in rows)}
                if table == "user_addresses":
                    for row in out[table].values():
                        row.pop("id")
            return out
    finally:
        engine.dispose()


def _key(table, row):
    return row["user_id"] if table == "user_addresses" else row["id"]


def _same(column, have, want):
    if column == "settings" and have is not None and want is not None:
        return json.loads(have) == json.loads(want)
    if column in ("is_public",) and have is not None and want is not None:
        return bool(have) == bool(want)
    return have == want


def check_rows(url, old, final):
    """No row lost; old values intact; new values NULL or final."""
    now = contents(url)
    assert set(now["users"]) == set(old["users"])
    assert set(now["projects"]) == set(old["projects"])
    old_columns = {"users": ("name", "email", "settings", "address"),
                   "projects": ("owner_id", "title", "is_public")}
    for table, rows in now.items():
        for key, row in rows.items():
            if table == "user_addresses":
                assert row == final[table][key], (table, key)
                continue
            seeded = dict(zip(old_columns[table], old[table][key]))
            for column, value in row.items():
                if column in seeded:
                    assert _same(column, value, seeded[column]), \
                        (table, key, column, value, seeded[column])
                elif column != "id":
                    assert value is None or _same(
                        column, value, final[table][key][column]), \
                        (table, key, column, value)


def finished_state(url):
    return helpers.schema_snapshot(url), contents(url)


class Reference:
    """An uninterrupted run: its end state and how long each phase took."""

    def __init__(self, engine_name, tmp_path):
        tmp_path.mkdir()
        url, self.owner = new_database(engine_name, tmp_path)
        self.url = url
        conf = helpers.write_config(tmp_path, url, **MIGRATION)
        seed(url)
        self.seconds = {}
        for phase in PHASES:
            start = time.monotonic()
            r = helpers.run_process(["db", phase], conf)
            self.seconds[phase] = time.monotonic() - start
            assert r.code == 0, r.err
        start = time.monotonic()
        assert helpers.run_process(["db", "check"], conf).code == 0
        self.startup = time.monotonic() - start
        self.schema, self.rows = finished_state(url)

    def window(self, phase):
        """Kill delays: from shortly before the work starts to its end."""
        return 0.8 * self.startup, 0.98 * self.seconds[phase]

    def finished_in(self, phase, seconds):
        """A run finished before its kill: the machine is faster now (or
        the phase was partly done); aim earlier from now on."""
        self.seconds[phase] = max(min(self.seconds[phase], seconds),
                                  self.startup)

    def close(self):
        if self.owner:
            self.owner[0].drop_database(self.owner[1])


def kill_run(conf, delay):
    """Start a phase, SIGKILL it after ``delay`` s.  Returns None when
    killed, else the seconds it took to finish."""
    start = time.monotonic()
    proc = subprocess.Popen([helpers.MANAGE, "--config-file", conf, "db",
                             conf.phase], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return None
    assert proc.returncode == 0, err
    return time.monotonic() - start


class Conf(str):
    phase = None


@pytest.mark.parametrize("engine_name", ENGINES)
def test_sigkill_at_random_moments(engine_name, tmp_path):
    seed_value = int(os.environ.get("MANAGE_CRASH_SEED") or time.time())
    rng = random.Random(seed_value)
    reference = Reference(engine_name, tmp_path / "reference")
    stats = collections.Counter()
    owners = []
    try:
        final = reference.rows
        rounds = 0
        while stats["kills"] < MIN_KILLS:
            rounds += 1
            folder = tmp_path / ("round%d" % rounds)
            folder.mkdir()
            url, owner = new_database(engine_name, folder)
            owners.append(owner)
            conf = Conf(helpers.write_config(folder, url, **MIGRATION))
            old = seed(url)
            for phase in PHASES:
                conf.phase = phase
                for _ in range(KILLS_PER_PHASE):
                    before = _progress(url)
                    low, high = reference.window(phase)
                    took = kill_run(conf, rng.uniform(low, high))
                    if took is not None:
                        stats["finished before the kill"] += 1
                        reference.finished_in(phase, took)
                        break
                    stats["kills"] += 1
                    stats["kills in " + phase] += 1
                    if _progress(url) != before:
                        stats["kills after the phase changed the db"] += 1
                    _after_kill(url, conf, old, final, stats,
                                "seed %d, %s" % (seed_value, phase))
                r = helpers.run_process(["db", phase], conf)
                assert r.code == 0, (seed_value, phase, r.err)
            assert helpers.run(["db", "check"], conf).code == 0
            schema, rows = finished_state(url)
            assert schema == reference.schema, seed_value
            assert rows == final, seed_value
        stats["rounds"] = rounds
        print("\ncrash test on %s (seed %d): %s" % (
            engine_name, seed_value, dict(sorted(stats.items()))))
        assert stats["kills"] >= MIN_KILLS
    finally:
        reference.close()
        for owner in owners:
            if owner:
                owner[0].drop_database(owner[1])


def _progress(url):
    """What changes while a phase works: versions and recorded progress."""
    try:
        return helpers.query(url, "SELECT kind, name, state, rows_done "
                                  "FROM manage_version ORDER BY kind, name")
    except sa.exc.DBAPIError:
        return None


def _after_kill(url, conf, old, final, stats, where):
    check_rows(url, old, final)
    version = helpers.run(["db", "version"], conf)
    assert version.code == 0, (where, version.err)
    assert " is running (" not in version.out, where
    if "unfinished:" in version.out:
        stats["kills that left an unfinished step"] += 1
        assert "interrupted" in version.out, (where, version.out)
    check = helpers.run(["db", "check"], conf)
    assert check.code in (3, 4, 5, 0), (where, check.err)
