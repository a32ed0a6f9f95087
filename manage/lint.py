"""``manage db lint``: check a migration repository without a database.

Every revision of both branches is rendered in Alembic's offline (``--sql``)
mode for each dialect, and each emitted statement goes through the same
:class:`manage.ddl_guard.RuleChecker` that watches a live run: expand may
only add, contract may only remove.  A revision that cannot be rendered
offline (it reads the database) is reported too: lint cannot vouch for it.
"""

import dataclasses
import re
from typing import Dict, List, Optional

from alembic.runtime.environment import EnvironmentContext

from manage import ddl_guard, run_context
from manage import dialects as dialects_registry
from manage.exceptions import ManageError
from manage.repository import BRANCHES

_RUNNING = re.compile(r"^-- Running upgrade .*-> (\S+)\s*$")


@dataclasses.dataclass
class Finding:
    revision: Optional[str]
    dialect: Optional[str]
    message: str

    def __str__(self):
        where = ", ".join(x for x in (self.revision, self.dialect) if x)
        return "%s: %s" % (where or "repository", self.message)


@dataclasses.dataclass
class LintResult:
    findings: List[Finding]
    #: Revisions rendered per dialect.
    rendered: Dict[str, int]

    @property
    def ok(self):
        return not self.findings


class _Statements:
    """Alembic's offline output buffer: one write per statement.

    Only the statements of ``target`` are judged (an offline run renders
    the revisions a target depends on as well).
    """

    def __init__(self, repository, dialect, target, findings):
        self.dialect = dialect
        self.target = target
        self.findings = findings
        self.revision = None
        self.checker = ddl_guard.RuleChecker(repository,
                                             lambda: self.revision)

    def write(self, text):
        match = _RUNNING.match(text.strip())
        if match:
            self.revision = match.group(1)
        elif self.revision == self.target:
            for message in self.checker.violations(text.strip().rstrip(";")):
                self.findings.append(Finding(self.revision, self.dialect,
                                             message))

    def flush(self):
        pass


def check(repository, dialects=None):
    """Lint every revision of ``repository`` for each dialect.

    ``repository`` is a :class:`manage.repository.Repository`, best loaded
    with ``strict=False``: each broken rule of the two branches it recorded
    (:attr:`~manage.repository.Repository.problems`) is a finding, with the
    text loading it strictly raises.  Returns a :class:`LintResult`; raises
    :class:`ManageError` for an unknown dialect name.
    """
    findings = [Finding(p.revision, None, p.message)
                for p in getattr(repository, "problems", ())]
    revisions = [r for branch in BRANCHES for r in repository.chain(branch)]
    for revision in revisions:
        try:
            ddl_guard.exception_reason(repository, revision)
        except ManageError as exc:
            findings.append(Finding(revision, None, str(exc)))
    rendered = {}
    known = dialects_registry.names()
    for dialect in dialects or known:
        if dialect not in known:
            raise ManageError("lint knows the dialects %s, not %r" % (
                ", ".join(known), dialect))
        rendered[dialect] = sum(_render(repository, dialect, revision,
                                        findings) for revision in revisions)
    return LintResult(findings, rendered)


def _render(repository, dialect, revision, findings):
    """Render one revision offline, judging its statements; 1 if done.

    It starts from the revisions it follows and depends on, so that only
    the revision itself is rendered.
    """
    statements = _Statements(repository, dialect, revision, findings)
    cfg = repository.alembic_config(
        {run_context.ATTR: run_context.RunContext(online=True)})
    cfg.set_main_option("sqlalchemy.url",
                        dialects_registry.get(dialect).offline_url())
    cfg.output_buffer = statements
    script = repository.script
    before = list(script.get_revision(revision)._all_down_revisions)
    try:
        with EnvironmentContext(
                cfg, script, as_sql=True, starting_rev=before or None,
                destination_rev=revision,
                fn=lambda rev, context: script._upgrade_revs(revision, rev)):
            script.run_env()
    except ManageError as exc:
        findings.append(Finding(revision, dialect, str(exc)))
        return 0
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        findings.append(Finding(revision, dialect, (
            "cannot be rendered offline (%s: %s), so lint cannot check it"
            % (type(exc).__name__, first))))
        return 0
    return 1
