"""Throttling: wait while the database is busy, so the application is not.

A :class:`LoadCheck` measures one load signal and compares it with a
threshold.  Built in: :class:`QueryCheck` (any SQL returning one number:
replica lag, queue length, a flag table...), and each engine's own checks
(:meth:`manage.dialects.base.DialectSupport.load_checks`: MySQL/MariaDB
``Threads_running``, what pt-online-schema-change watches).  Write your own
by subclassing :class:`LoadCheck` and passing it to
:meth:`manage.api.Manager.migrate`.
"""

import time

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from manage.exceptions import ConfigError


class LoadCheck:
    """A load signal and the level above which the runner waits."""

    #: Shown to the operator: ``"<name> <value> > <threshold>"``.
    name = "load"

    def __init__(self, threshold):
        self.threshold = threshold

    def measure(self, connection):
        """The current value (None when it cannot be measured)."""
        raise NotImplementedError

    def over(self, connection):
        """Why to wait now, or None."""
        value = self.measure(connection)
        if value is None or value <= self.threshold:
            return None
        return "%s %g > %g" % (self.name, value, self.threshold)


class QueryCheck(LoadCheck):
    """Any SQL query whose first column of the first row is the signal."""

    def __init__(self, query, threshold, name=None):
        super().__init__(threshold)
        self.query = query
        self.name = name or "load query"

    def measure(self, connection):
        """Raises :class:`~manage.exceptions.ConfigError` naming the
        option when the query fails or returns no number: it is the
        configuration that is wrong, not a migration."""
        try:
            value = connection.execute(sa.text(self.query)).scalar()
            return None if value is None else float(value)
        except (sa_exc.SQLAlchemyError, TypeError, ValueError) as exc:
            orig = getattr(exc, "orig", None) or exc
            raise ConfigError(
                "[migration] throttle_query failed: %s; fix the query or "
                "unset it, then run `manage db migrate` again" % (
                    str(orig).strip().splitlines()[0] if str(orig).strip()
                    else type(orig).__name__)) from None


class Throttle:
    """Runs the checks before each batch and waits while one is over.

    Gives up after ``max_wait`` seconds of continuous waiting (0: never),
    so that a run on an overloaded database stops (resumable) instead of
    hanging.
    """

    def __init__(self, checks=(), interval=0.5, max_wait=300.0,
                 sleep=time.sleep, clock=time.monotonic):
        self.checks = list(checks)
        self.interval = interval
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock

    def wait(self, engine):
        """Wait until no check is over; return (seconds waited, reason of
        the last wait or None, whether the load dropped in time)."""
        if not self.checks:
            return 0.0, None, True
        start, last = self.clock(), None
        while True:
            with engine.connect() as conn:
                reason = next(filter(None, (c.over(conn)
                                            for c in self.checks)), None)
            waited = self.clock() - start
            if reason is None:
                return waited, last, True
            if self.max_wait and waited >= self.max_wait:
                return waited, reason, False
            last = reason
            self.sleep(self.interval)
