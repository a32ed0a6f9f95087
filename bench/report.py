"""The targets of issue 4, judged on the figures, and doc/benchmarks.md."""

import json

# (key, what, target text, test of the results, how far off when missed)
TARGETS = [
    ("backfill_vs_offline", "online backfill rate / offline UPDATE rate",
     ">= 0.5", lambda r: r["backfill_vs_offline"] >= 0.5,
     lambda r: "%.0f %% short" % (100 * (0.5 - r["backfill_vs_offline"])
                                  / 0.5)),
    ("app_errors", "failed application queries (idle, expand, migrate)",
     "0", lambda r: r["app_errors"] == 0,
     lambda r: "%d failed" % r["app_errors"]),
    ("app_p99_ms_during_migrate", "application p99 during migrate",
     "<= 2 x idle p99",
     lambda r: r["app_p99_ms_during_migrate"] <= 2 * r["app_p99_ms_idle"],
     lambda r: "%.1f x idle" % (r["app_p99_ms_during_migrate"] /
                                max(r["app_p99_ms_idle"], 1e-9))),
    ("app_max_ms_during_migrate", "longest application stall during "
     "migrate", "<= 250 ms", lambda r: r["app_max_ms_during_migrate"] <= 250,
     lambda r: "%.0f ms over" % (r["app_max_ms_during_migrate"] - 250)),
    ("insert_trigger_overhead", "insert throughput lost to the sync "
     "triggers", "<= 25 %", lambda r: r["insert_trigger_overhead"] <= 0.25,
     lambda r: "%.0f points over" % (100 * (r["insert_trigger_overhead"]
                                            - 0.25))),
    ("manage_seconds", "expand + migrate against pt-online-schema-change, "
     "end to end", "faster",
     lambda r: r["manage_seconds"] < r.get("pt_osc_seconds", 0),
     lambda r: "%.2f x pt-osc" % (r["manage_seconds"] /
                                  max(r.get("pt_osc_seconds", 0), 1e-9))),
    ("scale_time_ratio", "time at 4 x rows / time at 1 x rows", "3.2 - 4.8",
     lambda r: 3.2 <= r["scale_time_ratio"] <= 4.8,
     lambda r: "%.2f" % r["scale_time_ratio"]),
    ("peak_rss_mb_large", "peak RSS at 4 x rows / at 1 x rows (flat)",
     "<= 1.25", lambda r: r["peak_rss_mb_large"] <=
     1.25 * r["peak_rss_mb_small"],
     lambda r: "%.2f x" % (r["peak_rss_mb_large"] / r["peak_rss_mb_small"])),
    ("cli_version_vs_alembic_current", "`manage db version` / `alembic "
     "current` wall time", "<= 1.3",
     lambda r: r["cli_version_vs_alembic_current"] <= 1.3,
     lambda r: "%.2f x" % r["cli_version_vs_alembic_current"]),
]


#: How a measured figure is shown where its target compares two figures.
SHOWN = {
    "app_p99_ms_during_migrate": lambda r: "%g ms (idle %g ms)" % (
        r["app_p99_ms_during_migrate"], r["app_p99_ms_idle"]),
    "app_max_ms_during_migrate": lambda r: "%g ms" % r[
        "app_max_ms_during_migrate"],
    "manage_seconds": lambda r: "%g s (pt-osc %g s)" % (
        r["manage_seconds"], r["pt_osc_seconds"]),
    "peak_rss_mb_large": lambda r: "%.2f (%g MB, 1 x: %g MB)" % (
        r["peak_rss_mb_large"] / r["peak_rss_mb_small"],
        r["peak_rss_mb_large"], r["peak_rss_mb_small"]),
}


def targets(results):
    out = []
    for key, what, target, met, miss in TARGETS:
        try:
            ok = bool(met(results))
        except KeyError:  # the figure could not be measured here
            out.append({"key": key, "what": what, "target": target,
                        "measured": None, "met": False, "by": "not measured"})
            continue
        out.append({"key": key, "what": what, "target": target,
                    "measured": SHOWN.get(key, lambda r: r[key])(results),
                    "met": ok, "by": None if ok else miss(results)})
    return out


FIGURES = [
    ("offline_rows_per_s", "offline single-statement UPDATE, rows/s"),
    ("backfill_rows_per_s", "online backfill (manage db migrate), rows/s"),
    ("backfill_vs_offline", "ratio"),
    ("app_p50_ms_idle", "application p50, idle (ms)"),
    ("app_p99_ms_idle", "application p99, idle (ms)"),
    ("app_max_ms_idle", "application longest query, idle (ms)"),
    ("app_p50_ms_during_migrate", "application p50 during migrate (ms)"),
    ("app_p99_ms_during_migrate", "application p99 during migrate (ms)"),
    ("app_max_ms_during_migrate", "application longest query during "
                                  "migrate (ms)"),
    ("app_max_ms_during_expand", "application longest query during "
                                 "expand (ms)"),
    ("app_errors", "failed application queries"),
    ("insert_trigger_overhead", "insert throughput lost to triggers"),
    ("update_trigger_overhead", "update throughput lost to triggers"),
    ("manage_seconds", "manage db expand + migrate under load (s)"),
    ("manage_app_p99_ms", "application p99 during expand + migrate (ms)"),
    ("manage_app_max_ms", "application longest query during expand + "
                          "migrate (ms)"),
    ("pt_osc_seconds", "pt-online-schema-change under load (s)"),
    ("pt_osc_app_p99_ms", "application p99 during pt-osc (ms)"),
    ("pt_osc_app_max_ms", "application longest query during pt-osc (ms)"),
    ("pt_osc_app_errors", "failed application queries during pt-osc"),
    ("backfill_seconds_small", "backfill at 1 x rows (s)"),
    ("backfill_seconds_large", "backfill at 4 x rows (s)"),
    ("scale_time_ratio", "time ratio 4 x / 1 x"),
    ("peak_rss_mb_small", "peak RSS of manage at 1 x rows (MB)"),
    ("peak_rss_mb_large", "peak RSS of manage at 4 x rows (MB)"),
    ("manage_version_seconds", "manage db version, median (s)"),
    ("alembic_current_seconds", "alembic current, median (s)"),
    ("cli_version_vs_alembic_current", "ratio"),
]

#: Why a target is missed on this machine and what would close it; shown
#: for the targets a run misses.  The figures quoted were measured with
#: the experiments described, at 1,000,000 rows, on this machine.
NOTES = {
    "backfill_vs_offline":
        "the sync triggers fire on every row the backfill updates (two "
        "BEFORE UPDATE triggers per users row); the offline UPDATE runs "
        "without them. The batching itself costs little: one UPDATE over "
        "the whole table *with* the triggers in place moves 79k rows/s, "
        "about what the batched engine reaches. Closing it: let the "
        "triggers skip rows written by the backfill's own session (a guard "
        "on a session variable, e.g. `IF @manage_backfill IS NULL THEN ... "
        "END IF` in MySQL, `current_setting('manage.backfill', true)` in "
        "PostgreSQL, set by the runner for each batch): the backfill "
        "computes both sides itself, so nothing is lost. Measured: 79k -> "
        "107k rows/s (+36 %), which puts the ratio near 0.58. PostgreSQL, "
        "whose triggers are cheaper, meets the target.",
    "app_p99_ms_during_migrate":
        "two cores: the backfill keeps one core busy inside mariadbd and "
        "its batch commits share the redo log and binary log with the "
        "application's commits, so the slowest 1 % of application queries "
        "wait for CPU or a log flush (the median does not move). Pacing "
        "trades throughput for latency: with `batch_pause = 0.1` the p99 "
        "during migrate was 9.3 ms against 3.1 ms idle (3 x) and migrate "
        "took 2.3 x longer; `batch_target_seconds = 0.05` with "
        "`batch_pause = 0.05`: 10.0 ms, 2.8 x longer. The default favours "
        "finishing; a service with a tight latency budget sets a pause, or "
        "`throttle_query` on its own latency signal. More cores close it.",
    "app_max_ms_during_migrate":
        "an application write to a row inside the batch being updated "
        "waits for the batch to commit; lower `batch_target_seconds`.",
    "insert_trigger_overhead":
        "MariaDB's cost is mostly the per-row stored-program call (one "
        "trigger alone costs 17-19 % per the measurements in shared/notes); "
        "release 2 already groups its two syncs of users into one trigger "
        "per event. Check that a revision does not install one trigger per "
        "sync of the same table (sync_columns(A, B) groups them). "
        "PostgreSQL shows no measurable cost.",
    "manage_seconds":
        "pt-online-schema-change copies the table once (INSERT ... SELECT "
        "in key order into a new table; its `DEFAULT (expression)` columns "
        "are filled during the copy) while manage updates the rows in "
        "place, once per data migration (two passes here), with the sync "
        "triggers firing on each row; an in-place update writes undo and "
        "grows rows, which a sequential copy into a fresh table does not. "
        "What the copy costs instead shows in the same run: application "
        "queries failed (deadlocks around its triggers and the table swap) "
        "and stalled for about half a second, the table needs twice its "
        "space, and a rename with old and new code writing both columns is "
        "out of its reach. Closing it: a guard that lets the sync triggers "
        "skip the backfill's own writes (a session flag the runner sets; "
        "measured +36 % on an in-place UPDATE of 1M rows) and running the "
        "data migrations of one table in one pass (half the row writes) "
        "would bring manage to about a third of today's time, still slower "
        "than a copy on an idle 2-core machine.",
    "scale_time_ratio":
        "the buffer pool (2 GB) holds the 4 x table too; outside the "
        "range, check for I/O (a smaller pool) or a plan change.",
    "peak_rss_mb_large":
        "the engine keeps no per-row state; a growth would mean a driver "
        "buffering a result set.",
    "cli_version_vs_alembic_current":
        "the extra time is Python start-up of manage's own modules and "
        "the entry-point scan for the plugins.",
}


def _value(value):
    if isinstance(value, float):
        return "%g" % value
    return "n/a" if value is None else str(value)


def markdown(results):
    m = results.get("machine", {})
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/run.py) from the figures of its last "
        "run, which are also in `bench/results.json`. Release 2 of the "
        "reference schema on a users table of **%d rows** (4 x: %d): "
        "`users.name` renamed to `display_name` and `users.email_domain` "
        "added and filled, two data migrations, two column syncs sharing "
        "one trigger per event."
        % (results["rows"], 4 * results["rows"]),
        "",
        "## Targets",
        "",
        "| target | wanted | measured | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append("| %s | %s | %s | %s |" % (
            t["what"], t["target"], _value(t["measured"]),
            "yes" if t["met"] else "**no** (%s)" % t["by"]))
    lines += ["", "## Figures (MariaDB)", "", "| figure | value |",
              "|---|---|"]
    for key, label in FIGURES:
        if key in results:
            lines.append("| %s | %s |" % (label, _value(results[key])))
    if "postgresql" in results:
        lines += ["", "## Figures (PostgreSQL)", "", "| figure | value |",
                  "|---|---|"]
        lines += ["| %s | %s |" % (k, _value(v))
                  for k, v in sorted(results["postgresql"].items())
                  if not isinstance(v, dict)]
    missed = [t for t in results["targets"] if not t["met"]]
    if missed:
        lines += ["", "## Targets missed: why, and what would close them",
                  ""]
        for t in missed:
            lines.append("- **%s** (%s): %s" % (
                t["what"], t["by"], NOTES.get(t["key"], "see the report.")))
    lines += [
        "", "## Run-to-run variation", "",
        "On the 2-core machine of the recorded run, three full runs at "
        "1,000,000 rows with one trigger per sync (before release 2 grouped "
        "its two syncs of users into one trigger per event) gave: backfill "
        "/ offline 0.43 - 0.55 (the offline UPDATE varied more, 149k - 182k "
        "rows/s, than the backfill, 79k - 81k); insert throughput lost to "
        "triggers 0.25 - 0.33 (0.21 with the grouped trigger); application "
        "p99 during migrate 3.6 - 5.8 x idle, longest stall 159 - 179 ms; "
        "expand + migrate 24 - 35 s against 3.3 - 3.7 s for "
        "pt-online-schema-change, which failed 3 - 6 application queries "
        "(deadlocks) each time while manage failed none; 4 x rows in "
        "3.5 - 4.7 x the time at a flat 70 - 74 MB.",
    ]
    lines += [
        "", "## Machine", "",
        "%s, %s cores, %s GB memory; %s; Python %s; MariaDB %s%s; run took "
        "%s s." % (m.get("cpu", "?"), m.get("cores", "?"),
                   m.get("memory_gb", "?"), m.get("os", "?"),
                   m.get("python", "?"), m.get("mariadb", "?"),
                   "; %s" % m["postgresql"].split(" on ")[0]
                   if "postgresql" in m else "",
                   results.get("bench_seconds", "?")),
        "", "## How to reproduce", "",
        "```sh",
        "make bench                      # BENCH_ROWS=1000000 by default",
        "BENCH_ROWS=200000 make bench    # a quicker run",
        "```",
        "",
        "`make bench` installs MariaDB, PostgreSQL 15 and percona-toolkit "
        "when missing (tools/install-db-servers.sh, as root), starts its own "
        "throwaway servers on 127.0.0.1 (MariaDB with binary logging and a "
        "2 GB buffer pool), and stops them at the end. It is not part of "
        "`make test`. `BENCH_POSTGRESQL=0` skips the PostgreSQL figures; "
        "`BENCH_IDLE_SECONDS` sets the idle window (default 10).",
        "", "## Method", "",
        "- Each scenario gets a fresh database at release 1 filled with "
        "INSERT ... SELECT from a sequence, then runs release 2 with the "
        "`manage` command in a child process (its wall time and peak RSS "
        "come from `wait4`). Default `[migration]` options throughout.",
        "- Offline: `manage db expand`, the triggers dropped, then one "
        "UPDATE statement per data migration over the whole table (what an "
        "offline upgrade does). Online: `manage db expand` then "
        "`manage db migrate` (batches walking the primary key, triggers "
        "in place). Rate = rows moved (2 x rows) / seconds.",
        "- Application: a separate process with 4 threads, each pacing "
        "itself to 100 operations/s: 70 %% point reads by key, 20 %% point "
        "updates of `users.name` (the sync triggers fire), 10 %% inserts; "
        "every query is timed. Idle = the %s s before the change starts; "
        "during = while the `manage` (or pt-osc) process runs."
        % results.get("idle_seconds", 10),
        "- Trigger cost: on the expanded table, alternately without and "
        "with the sync triggers: inserts (old code's columns, 1,000 rows per "
        "executemany transaction) and point updates (500 per transaction); "
        "the best of 3 rounds each.",
        "- pt-online-schema-change 3 (defaults: 0.5 s chunks, "
        "`--alter-foreign-keys-method=auto`) adds both columns with "
        "`DEFAULT (expression)` so that its table copy fills them: the same "
        "end state as expand + migrate, under the same application load.",
        "- `manage db version` against `alembic current` on the migrated "
        "database: median wall time of 7 runs of each process.",
        "",
        "## Raw results", "", "```json",
        json.dumps({k: v for k, v in results.items() if k != "details"},
                   indent=2, sort_keys=True),
        "```", "",
    ]
    return "\n".join(lines)
