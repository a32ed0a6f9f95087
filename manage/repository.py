"""The migration repository: where revisions and the Alembic environment live.

A repository is a folder with ``migrations/`` (``env.py``,
``script.py.mako``), ``expand/`` and ``contract/`` (the revision files of the
two branches, labelled ``expand`` and ``contract``).  The bundled one sits at
the top of this project.
"""

import os

from alembic.config import Config
from alembic.script import ScriptDirectory

from manage.exceptions import RepositoryError

EXPAND = "expand"
CONTRACT = "contract"
BRANCHES = (EXPAND, CONTRACT)


def bundled_path():
    import migrations
    return os.path.dirname(os.path.dirname(os.path.abspath(
        migrations.__file__)))


class Repository:
    """Read-only view of a migration repository's revision graph."""

    def __init__(self, path=None):
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
        self._chains = {b: self._chain(b) for b in BRANCHES}

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
            raise RepositoryError("the migration repository %s cannot be "
                                  "loaded: %s" % (self.path, exc)) from None
        return script

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
        """The contract revisions that depend on an expand revision."""
        out = set()
        for rev_id in self._chains[CONTRACT]:
            rev = self.script.get_revision(rev_id)
            if expand_revision in rev._all_down_revisions:
                out.add(rev_id)
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
