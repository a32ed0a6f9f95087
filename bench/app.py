"""The application under load: point reads and writes from several threads.

It runs in a process of its own (so that its threads do not share a GIL
with the benchmark's own work) and times every query.  Each thread paces
itself to ``rate`` operations per second: 70 % reads by primary key, 20 %
updates of one row (old code's column, so the sync triggers fire), 10 %
inserts.  Samples are ``(wall clock start, seconds, True or the error)``.
"""

import multiprocessing
import random
import threading
import time

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

READ = sa.text("SELECT id, name, email FROM users WHERE id = :id")
WRITE = sa.text("UPDATE users SET name = :name WHERE id = :id")
INSERT = sa.text("INSERT INTO users (name, email) VALUES (:name, :email)")


def _worker(url, max_id, rate, stop, samples, seed):
    rnd = random.Random(seed)
    engine = sa.create_engine(url, poolclass=NullPool)
    interval = 1.0 / rate
    conn = None
    while not stop.is_set():
        begin, start = time.time(), time.perf_counter()
        ok = True
        try:
            if conn is None:
                conn = engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            op, key = rnd.random(), rnd.randint(1, max_id)
            if op < 0.7:
                conn.execute(READ, {"id": key}).fetchall()
            elif op < 0.9:
                conn.execute(WRITE, {"id": key, "name": "app %d" % key})
            else:
                conn.execute(INSERT, {"name": "new", "email": "n@app.org"})
        except Exception as exc:  # counted, the application carries on
            ok = "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0])
            if conn is not None:
                conn.invalidate()
                conn.close()
                conn = None
        took = time.perf_counter() - start
        samples.append((begin, took, ok))
        time.sleep(max(0.0, interval - took))
    if conn is not None:
        conn.close()
    engine.dispose()


def _main(url, max_id, threads, rate, stop, results):
    samples = []
    workers = [threading.Thread(target=_worker, args=(
        url, max_id, rate, stop, samples, n)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results.put(samples)


class AppLoad:
    """Start, mark phases by wall clock, stop; then ask for statistics."""

    def __init__(self, url, max_id, threads=4, rate=100):
        ctx = multiprocessing.get_context("spawn")
        self.stop_event = ctx.Event()
        self.results = ctx.Queue()
        self.process = ctx.Process(target=_main, args=(
            url, max_id, threads, rate, self.stop_event, self.results),
            daemon=True)
        self.samples = None

    def __enter__(self):
        self.process.start()
        time.sleep(1.0)  # connections open, caches warm
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.samples = self.results.get(timeout=60)
        self.process.join(30)

    def stats(self, start, end):
        """p50, p99, max latency (ms) and errors between two wall times."""
        window = [s for s in self.samples if start <= s[0] < end]
        times = sorted(s[1] for s in window)
        if not times:
            return {"queries": 0, "p50_ms": 0.0, "p99_ms": 0.0,
                    "max_ms": 0.0, "errors": 0, "error_kinds": []}
        return {
            "queries": len(times),
            "p50_ms": round(1000 * times[len(times) // 2], 2),
            "p99_ms": round(1000 * times[min(len(times) - 1,
                                             int(len(times) * 0.99))], 2),
            "max_ms": round(1000 * times[-1], 2),
            "errors": sum(1 for s in window if s[2] is not True),
            "error_kinds": sorted({s[2][:120] for s in window
                                   if s[2] is not True}),
        }
