"""The migration repository: where revisions and the Alembic environment live.

A repository is a folder with ``migrations/`` (``env.py``,
``script.py.mako``), ``expand/`` and ``contract/`` (the revision files of the
two branches, labelled ``expand`` and ``contract``).  The bundled one sits at
the top of this project.
"""

import dataclasses
import os
import re
from typing import Dict, List, Optional

from alembic.config import Config
from alembic.script import ScriptDirectory

from manage.exceptions import RepositoryError

EXPAND = "expand"
CONTRACT = "contract"
BRANCHES = (EXPAND, CONTRACT)
#: The helpers of :mod:`manage.ops` that belong to the other branch.  The
#: DDL guard lets expand drop sync triggers (it re-creates them), so a sync
#: dropped by an expand revision would go unnoticed until the data is lost.
WRONG_HELPERS = {EXPAND: frozenset(("drop_column_sync", "drop_column_copy")),
                 CONTRACT: frozenset(("sync_columns",
                                      "copy_column_to_table"))}
HELPER_REASON = {
    EXPAND: "which removes the triggers that carry old code's writes while "
            "old code still runs",
    CONTRACT: "which installs triggers after the new code is deployed, when "
              "contract may only remove"}


def bundled_path():
    import migrations
    return os.path.dirname(os.path.dirname(os.path.abspath(
        migrations.__file__)))


@dataclasses.dataclass(frozen=True)
class Problem:
    """A revision that breaks the shape of the two branches.

    ``message`` is one line that names the revision file and the fix;
    ``revision`` is the revision id (None for the repository as a whole).
    """
    revision: Optional[str]
    message: str


class Repository:
    """Read-only view of a migration repository's revision graph.

    Loading it checks the shape of the two branches (doc/writing-
    migrations.rst, "The shape of the two branches"): every expand
    revision follows and depends on expand revisions only; every contract
    revision follows contract revisions only and depends on at least one
    expand revision, and on expand revisions only, in the order of the
    contract branch; each revision file sits in the folder of its branch.

    :param path: the repository folder (default: the bundled one).
    :param strict: True (the default) raises :class:`RepositoryError` for
        the first broken rule; False records every one in :attr:`problems`
        instead (what ``manage db lint`` reports).
    :raises RepositoryError: a folder is missing, a revision file does not
        load, a branch is not one line, or (``strict``) a rule is broken.
    """

    def __init__(self, path=None, strict=True):
        self.path = os.path.abspath(path or bundled_path())
        self.env_dir = os.path.join(self.path, "migrations")
        for folder in (self.env_dir,) + tuple(
                os.path.join(self.path, b) for b in BRANCHES):
            if not os.path.isdir(folder):
                raise RepositoryError(
                    "the migration repository %s has no %s/ folder (a "
                    "repository holds migrations/, expand/ and contract/)"
                    % (self.path, os.path.basename(folder)))
        if not os.path.isfile(os.path.join(self.env_dir, "env.py")):
            raise RepositoryError("the migration repository %s has no "
                                  "migrations/env.py" % self.path)
        self.script = self._load()
        #: Every broken rule, in file order (empty when ``strict``: the
        #: first one raised).
        self.problems: List[Problem] = self._revision_problems()
        self._chains: Dict[str, List[str]] = {}
        for branch in BRANCHES:
            try:
                self._chains[branch] = self._chain(branch)
            except RepositoryError as exc:
                if strict and not self.problems:
                    raise
                self.problems.append(Problem(None, str(exc)))
                self._chains[branch] = []
        self.problems += self._order_problems()
        if strict and self.problems:
            first = self.problems[0].message
            if len(self.problems) > 1:
                first += " (and %d more problem(s): `manage db lint` lists " \
                         "them)" % (len(self.problems) - 1)
            raise RepositoryError(first)

    def alembic_config(self, attributes=None):
        """An Alembic Config for this repository, with run attributes."""
        cfg = Config()
        cfg.set_main_option("script_location",
                            self.env_dir.replace("%", "%%"))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", os.pathsep.join(
            os.path.join(self.path, b).replace("%", "%%") for b in BRANCHES))
        cfg.attributes.update(attributes or {})
        return cfg

    def _load(self):
        try:
            script = ScriptDirectory.from_config(self.alembic_config())
            script.revision_map.heads  # forces every revision file to load
        except SyntaxError as exc:
            raise RepositoryError("revision file %s does not parse: %s "
                                  "(line %s)" % (exc.filename, exc.msg,
                                                 exc.lineno)) from None
        except Exception as exc:
            raise RepositoryError(self._label_clash(str(exc)) or (
                "the migration repository %s cannot be loaded: %s"
                % (self.path, exc))) from None
        return script

    def _label_clash(self, text):
        """Alembic's "branch name already used", as the file to fix."""
        match = re.search(r"Branch name '([^']+)' in revision (\S+) already "
                          r"used by revision (\S+)", text)
        if not match:
            return None
        label, one, other = match.groups()
        files = {r: self._find_file(r) for r in (one, other)}
        # Blame the revision whose folder is not the branch it claims.
        culprit = next((r for r in (one, other) if files[r] and label in
                        BRANCHES and os.path.dirname(files[r]) != label),
                       one)
        first = other if culprit == one else one
        return ("revision %s (%s) sets branch_labels %r, which revision %s "
                "already carries; only the first revision of a branch is "
                "labelled: set branch_labels = None in %s (an expand/ "
                "revision is on the expand branch, a contract/ revision on "
                "the contract branch)" % (culprit, files[culprit] or "?",
                                          label, first,
                                          files[culprit] or "its file"))

    def _find_file(self, revision):
        """The revision file that declares ``revision = "<id>"``."""
        pattern = re.compile(r"^revision\s*=\s*['\"]%s['\"]" %
                             re.escape(revision), re.M)
        for branch in BRANCHES:
            folder = os.path.join(self.path, branch)
            for name in sorted(os.listdir(folder)):
                if not name.endswith(".py"):
                    continue
                try:
                    with open(os.path.join(folder, name)) as f:
                        if pattern.search(f.read()):
                            return os.path.join(branch, name)
                except OSError:
                    continue
        return None

    def _chain(self, branch):
        """The branch's revisions from its base to its single head."""
        heads = [h for h in self.script.get_heads()
                 if self.branch_of(h) == branch]
        if len(heads) > 1:
            raise RepositoryError(
                "the %s branch has %d heads (%s); it must be one line of "
                "revisions: make one revision follow the other"
                % (branch, len(heads), ", ".join(sorted(heads))))
        if not heads:
            return []
        chain = []
        rev = self.script.get_revision(heads[0])
        while rev is not None:
            chain.append(rev.revision)
            parents = [p for p in rev._versioned_down_revisions
                       if self.branch_of(p) == branch]
            if len(parents) > 1:
                raise RepositoryError("revision %s of the %s branch merges "
                                      "two lines; branches must be linear"
                                      % (rev.revision, branch))
            rev = self.script.get_revision(parents[0]) if parents else None
        chain.reverse()
        return chain

    # -- the shape of the two branches -------------------------------------
    def _file(self, rev):
        """Where a revision is, for messages: its path in the repository."""
        path = getattr(rev, "path", None) or ""
        try:
            return os.path.relpath(path, self.path)
        except ValueError:
            return path

    def _labels(self, rev):
        return [b for b in BRANCHES if b in rev.branch_labels]

    def _revision_problems(self):
        """Per-revision rules: branch, folder, what it follows and needs."""
        found = []
        revisions = sorted(self.script.revision_map._revision_map.items(),
                           key=lambda item: str(item[0]))
        seen = set()
        for key, rev in revisions:
            if rev is None or not key or rev.revision in seen or \
                    key != rev.revision:
                continue
            seen.add(rev.revision)
            rank, message = self._revision_problem(rev)
            if message:
                found.append((rank, Problem(rev.revision, "revision %s (%s) "
                                            "%s" % (rev.revision,
                                                    self._file(rev),
                                                    message))))
        # The revision that is out of place first: the others' problems
        # usually follow from it.
        return [problem for rank, problem in
                sorted(found, key=lambda item: item[0])]

    def _revision_problem(self, rev):
        """The first rule ``rev`` breaks: (rank, 'what; fix') or (0, None).

        The rank orders the problems: a revision on the wrong branch or in
        the wrong folder first, a wrong dependency last.
        """
        labels = self._labels(rev)
        folder = os.path.basename(os.path.dirname(
            os.path.abspath(rev.path))) if rev.path else None
        own = folder if folder in BRANCHES else None
        follows = list(rev._versioned_down_revisions)
        needs = list(rev._resolved_dependencies)
        if not labels:
            return 1, (
                "is on neither branch: it has no branch label and follows no "
                "revision of the expand or contract branch (down_revision = "
                "%r), so manage never runs it but plain `alembic upgrade "
                "heads` would; set its down_revision to the last revision of "
                "the %s branch" % (rev.down_revision,
                                   own or "expand or contract"))
        if len(labels) > 1:
            return 2, (
                "is on both branches (it follows %s); a revision follows "
                "revisions of its own branch only: set its down_revision to "
                "the revision before it in %s/ (None for the first) and use "
                "depends_on for what a contract revision needs from the "
                "expand branch" % (", ".join(follows) or "nothing",
                                   own or "its folder"))
        branch = labels[0]
        if own and own != branch:
            return 3, (
                "sits in %s/ but is on the %s branch (it follows %s); move "
                "the file to %s/, or set its down_revision to the revision "
                "before it in %s/" % (own, branch, ", ".join(follows) or
                                      "nothing", branch, own))
        bad = [r for r in follows if self.branch_of(r) != branch]
        if bad:
            return 4, (
                "is a %s revision that follows %s revision %s; set its "
                "down_revision to the revision before it in %s/"
                % (branch, self._branch_name(bad[0]), bad[0], branch))
        bad = [r for r in needs if self.branch_of(r) != EXPAND]
        if branch == EXPAND and bad:
            return 5, (
                "is an expand revision that depends on %s revision %s; an "
                "expand revision may need expand revisions only (expand runs "
                "before the new code is deployed, contract after): remove %r "
                "from its depends_on" % (self._branch_name(bad[0]), bad[0],
                                         bad[0]))
        if branch == CONTRACT and bad:
            return 5, (
                "is a contract revision that depends on %s revision %s; a "
                "contract revision depends on the expand revisions whose "
                "changes it completes, and follows the contract revision "
                "before it through down_revision only: remove %r from its "
                "depends_on" % (self._branch_name(bad[0]), bad[0], bad[0]))
        wrong = sorted(self._calls(rev) & WRONG_HELPERS[branch])
        if wrong:
            return 6, (
                "is a%s %s revision that calls %s, %s; move the call to %s "
                "revision" % ("n" if branch == EXPAND else "", branch,
                              wrong[0], HELPER_REASON[branch],
                              "the contract" if branch == EXPAND else
                              "an expand"))
        if branch == CONTRACT and not needs:
            return 5, (
                "is a contract revision that depends on no expand revision; "
                "without one manage cannot tell which data migrations must "
                "be finished and recounted before it runs: set depends_on to "
                "the expand revision whose changes it completes (depends_on "
                "= \"<expand revision>\")")
        return 0, None

    @staticmethod
    def _calls(rev):
        """The names ``upgrade()`` of a revision refers to."""
        code = getattr(getattr(rev.module, "upgrade", None), "__code__",
                       None)
        return set(code.co_names) if code is not None else set()

    def _branch_name(self, revision):
        return self.branch_of(revision) or "unlabelled"

    def _order_problems(self):
        """Each contract revision needs at least what the one before did."""
        found = []
        expand = self._chains.get(EXPAND, [])
        before = None   # (revision, its latest expand dependency)
        for rev_id in self._chains.get(CONTRACT, []):
            latest = self._latest_expand_dependency(rev_id)
            if latest is None:
                continue
            if before is not None and \
                    expand.index(latest) < expand.index(before[1]):
                rev = self.script.get_revision(rev_id)
                found.append(Problem(rev_id, (
                    "revision %s (%s) is a contract revision that depends on "
                    "expand revision %s, which comes before %s that the "
                    "earlier contract revision %s depends on; contract "
                    "revisions run in order, so each one's expand "
                    "dependencies must not come before those of the one "
                    "before it: set its depends_on to %r or a later expand "
                    "revision" % (rev_id, self._file(rev), latest, before[1],
                                  before[0], before[1]))))
                continue
            before = (rev_id, latest)
        return found

    def _latest_expand_dependency(self, rev_id):
        """The last expand revision (in chain order) a revision needs."""
        expand = self._chains.get(EXPAND, [])
        needs = [r for r in self.script.get_revision(
            rev_id)._resolved_dependencies if r in expand]
        return max(needs, key=expand.index) if needs else None

    def knows(self, revision):
        try:
            return self.script.get_revision(revision) is not None
        except Exception:
            return False

    def branch_of(self, revision):
        """'expand', 'contract' or None for a revision id."""
        try:
            labels = self.script.get_revision(revision).branch_labels
        except Exception:
            return None
        for branch in BRANCHES:
            if branch in labels:
                return branch
        return None

    def chain(self, branch):
        return list(self._chains[branch])

    def head(self, branch):
        chain = self._chains[branch]
        return chain[-1] if chain else None

    def pending(self, branch, current):
        """Revisions of the branch after ``current`` (None: all)."""
        chain = self._chains[branch]
        if current is None:
            return list(chain)
        return chain[chain.index(current) + 1:]

    def manages_triggers(self, revision):
        """Whether a revision's upgrade() creates or drops sync triggers."""
        module = self.script.get_revision(revision).module
        code = getattr(getattr(module, "upgrade", None), "__code__", None)
        if code is None:
            return False
        names = set(code.co_names)
        texts = " ".join(c for c in code.co_consts if isinstance(c, str))
        return bool(names & {"sync_columns", "drop_column_sync",
                             "copy_column_to_table", "drop_column_copy"}) or \
            "TRIGGER" in texts.upper()

    def contracts_after(self, expand_revision):
        """The contract revisions that complete an expand revision.

        Those that depend on it directly, and the first contract revision
        that needs it (its latest expand dependency is it or a later one):
        an expand revision that no contract revision names is completed by
        the first one that runs after it, so its data migrations are
        recounted before that one.
        """
        expand = self._chains[EXPAND]
        out = set()
        first = None
        for rev_id in self._chains[CONTRACT]:
            rev = self.script.get_revision(rev_id)
            if expand_revision in rev._all_down_revisions:
                out.add(rev_id)
            latest = self._latest_expand_dependency(rev_id)
            if first is None and latest is not None and \
                    expand_revision in expand and \
                    expand.index(latest) >= expand.index(expand_revision):
                first = rev_id
        if first is not None:
            out.add(first)
        return out

    def positions(self, heads):
        """Where each branch stands, given the heads Alembic recorded.

        Alembic keeps only the heads in ``alembic_version``: once a contract
        revision that depends on the expand head is applied, the expand head
        is implied, not listed.  So every revision the heads imply (their
        ancestors and dependencies) counts as applied, and each branch stands
        at the last of its revisions that is applied.
        """
        applied = set()
        todo = list(heads)
        while todo:
            rev = self.script.get_revision(todo.pop())
            if rev.revision not in applied:
                applied.add(rev.revision)
                todo.extend(rev._all_down_revisions)
        position = {}
        for branch in BRANCHES:
            done = [r for r in self._chains[branch] if r in applied]
            position[branch] = done[-1] if done else None
        return position
