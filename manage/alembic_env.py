"""What a repository's ``env.py`` runs: Alembic configured the manage way.

Every revision runs in its own transaction, and after each one the composite
version table records where its branch stands (inside the same transaction
where the database has transactional DDL).  When manage drives Alembic it
hands over an open connection and its run attributes; when plain ``alembic``
runs the environment, the connection comes from ``sqlalchemy.url`` in the ini
file or from manage's own configuration.
"""

from manage import run_context, version_table

ATTR_CONNECTION = "connection"


def run_migrations(context):
    config = context.config
    connection = config.attributes.get(ATTR_CONNECTION)
    if context.is_offline_mode():
        context.configure(url=_url(config), literal_binds=True,
                          transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    if connection is not None:
        _run_online(context, connection)
        return
    from manage import database
    engine = database.create_engine(_url(config))
    try:
        with engine.connect() as connection:
            _run_online(context, connection)
            connection.commit()
    finally:
        engine.dispose()


def _run_online(context, connection):
    run = run_context.current(context.config)
    context.configure(
        connection=connection,
        target_metadata=None,
        transaction_per_migration=True,
        on_version_apply=[_record_branch] + list(run.on_version_apply),
    )
    with context.begin_transaction():
        context.run_migrations()


def _record_branch(ctx, step, heads, run_args):
    """Mirror the branch's new revision into the composite version table."""
    if not step.is_upgrade:
        return
    revision = step.up_revision
    labels = revision.branch_labels if revision is not None else ()
    for branch in ("expand", "contract"):
        if branch in labels:
            version_table.ensure(ctx.connection)
            version_table.set_branch(ctx.connection, branch,
                                     revision.revision)


def _url(config):
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from manage import config as manage_config
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    manage_config.register_opts(conf)
    conf([], project="manage")
    return manage_config.Settings.from_conf(conf).connection
