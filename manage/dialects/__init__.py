"""Per-dialect behaviour, chosen from one registry keyed by dialect name.

Each supported database has one module here implementing
:class:`manage.dialects.base.DialectSupport`.  The registry imports a module
only when a database of its kind is used.
"""

import importlib

from manage.exceptions import UnsupportedDialectError

REGISTRY = {
    "sqlite": "manage.dialects.sqlite:SQLiteSupport",
    "mysql": "manage.dialects.mysql:MySQLSupport",
    "mariadb": "manage.dialects.mysql:MySQLSupport",
    "postgresql": "manage.dialects.postgresql:PostgreSQLSupport",
}
#: Other names SQLAlchemy gives a database of the same kind.
ALIASES = {"mariadb": "mysql"}


def names():
    """The supported dialects, one name each (``["mysql", "postgresql",
    "sqlite"]``): ``lint --dialect`` choices, lint's renderings."""
    return sorted(n for n in REGISTRY if n not in ALIASES)

_instances = {}


def get(dialect_name):
    """The support object for a SQLAlchemy dialect name."""
    if dialect_name not in _instances:
        target = REGISTRY.get(dialect_name)
        if target is None:
            raise UnsupportedDialectError(
                "manage does not support the %s database (supported: %s)"
                % (dialect_name, ", ".join(sorted(REGISTRY))))
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise UnsupportedDialectError(
                "support for the %s database is not available in this "
                "version of manage" % dialect_name) from None
        _instances[dialect_name] = getattr(module, class_name)()
    return _instances[dialect_name]
