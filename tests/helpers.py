"""Helpers shared by the tests: running the CLI, configs, schema snapshots."""

import dataclasses
import io
import os
import shutil
import subprocess
import sys

import sqlalchemy as sa

from manage import api, cli, config, database, dialects
from manage.datamigration import loader
from manage.repository import Repository, bundled_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANAGE = os.path.join(os.path.dirname(sys.executable), "manage")


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


def installed_version():
    """The version of the installed ``manage`` distribution."""
    import importlib.metadata
    return importlib.metadata.version("manage")


def db_actions():
    """{action: [its option strings]} from the parser the CLI builds."""
    import argparse
    commands = argparse.ArgumentParser(prog="manage").add_subparsers()
    cli.add_command_parsers(commands)
    actions = next(a for a in commands.choices["db"]._actions
                   if isinstance(a, argparse._SubParsersAction))
    return {name: [s for a in sub._actions for s in a.option_strings
                   if s.startswith("--") and s != "--help"]
            for name, sub in actions.choices.items()}


def write_config(folder, url, **migration):
    path = os.path.join(str(folder), "manage.conf")
    lines = ["[database]", "connection = %s" % url, "", "[migration]"]
    lines += ["%s = %s" % item for item in migration.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def plain_advice(text, argv, raw):
    """The advice manage prints names the config file it was given
    (```manage --config-file F db migrate```, tested as such in
    tests/test_config_sources.py); with ``raw`` false, that option is taken
    out again so that assertions on messages read as the docs write them."""
    prefix = cli._command_prefix(argv)
    if raw or prefix == "manage":
        return text
    return text.replace("`%s db " % prefix, "`manage db ")


def run(args, conf=None, raw=False):
    """Run the CLI in this process; returns exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    argv = (["--config-file", conf] if conf else []) + list(args)
    code = cli.main(argv, stdout=out, stderr=err)
    return Result(code, plain_advice(out.getvalue(), argv, raw),
                  plain_advice(err.getvalue(), argv, raw))


def run_process(args, conf=None, cwd=None, env=None, timeout=120,
                raw=False):
    """Run the installed ``manage`` command in a child process."""
    argv = [MANAGE] + (["--config-file", conf] if conf else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)
    return Result(proc.returncode, plain_advice(proc.stdout, argv[1:], raw),
                  plain_advice(proc.stderr, argv[1:], raw))


def manager(url, repository=None, plugins=None, **settings):
    return api.Manager(config.Settings(connection=url, **settings),
                       repository=repository, plugins=plugins)


def release_repository(folder, release):
    """A copy of the bundled repository holding releases 1..``release``.

    It plays the code of that release: deploy it, then deploy the next.
    """
    target = os.path.join(str(folder), "repo_r%d" % release)
    src = bundled_path()
    shutil.copytree(os.path.join(src, "migrations"),
                    os.path.join(target, "migrations"))
    for branch in ("expand", "contract"):
        os.makedirs(os.path.join(target, branch))
        for name in os.listdir(os.path.join(src, branch)):
            if name[:1] == "r" and int(name[1]) <= release:
                shutil.copy(os.path.join(src, branch, name),
                            os.path.join(target, branch, name))
    return Repository(target)


def release_plugins(repository):
    """The bundled plugins that belong to the releases of a repository."""
    chain = set(repository.chain("expand"))
    return [p for p in loader.load(config.DEFAULT_NAMESPACE)
            if p.after_revision in chain]


def deploy(url, release):
    """A manager running the code of ``release``."""
    import tempfile
    repo = release_repository(tempfile.mkdtemp(prefix="manage-repo-"),
                              release)
    return manager(url, repository=repo, plugins=release_plugins(repo))


def schema_snapshot(url):
    """Tables, columns, keys, indexes and sync triggers, comparable."""
    engine = database.create_engine(url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            snap = {}
            for table in sorted(insp.get_table_names()):
                snap[table] = {
                    "columns": [(c["name"], str(c["type"]), c["nullable"])
                                for c in insp.get_columns(table)],
                    "pk": insp.get_pk_constraint(table)["constrained_columns"],
                    "fks": sorted((tuple(f["constrained_columns"]),
                                   f["referred_table"])
                                  for f in insp.get_foreign_keys(table)),
                    "indexes": sorted((tuple(i["column_names"]),
                                       bool(i["unique"]))
                                      for i in insp.get_indexes(table)),
                    "uniques": sorted(tuple(u["column_names"]) for u in
                                      insp.get_unique_constraints(table)),
                }
            support = dialects.get(engine.dialect.name)
            snap["<triggers>"] = support.list_sync_triggers(conn)
            return snap
    finally:
        engine.dispose()


def query(url, sql, **params):
    engine = database.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else None
    finally:
        engine.dispose()


def edit_revision(repo_path, prefix, old, new):
    """Replace text in the revision file of a repository copy whose name
    starts with ``prefix``; returns its path."""
    for branch in ("expand", "contract"):
        folder = os.path.join(str(repo_path), branch)
        for name in os.listdir(folder):
            if name.startswith(prefix):
                path = os.path.join(folder, name)
                with open(path) as f:
                    text = f.read()
                assert old in text, (path, old)
                with open(path, "w") as f:
                    f.write(text.replace(old, new))
                shutil.rmtree(os.path.join(folder, "__pycache__"),
                              ignore_errors=True)  # no stale bytecode
                return path
    raise AssertionError("no revision %s in %s" % (prefix, repo_path))
