"""Reflect what the sync triggers need to know of a table (at expand).

:func:`reflect` reads a table's primary key, the kind of each column (text
is compared byte for byte, binary and other values as values) and the
constant server defaults, into a :class:`manage.column_sync.TableShape`
that the per-dialect trigger generators take.
"""

import re

import sqlalchemy as sa

from manage.column_sync import TableShape

#: A server default that is a constant: a string or number literal, a
#: boolean or NULL, possibly cast (``'x'::character varying``).
_CONSTANT = re.compile(
    r"""^\(*\s*('(?:[^']|'')*'|[-+]?\d+(?:\.\d+)?|true|false|null)\s*\)*"""
    r"""(?:::[a-z ]+(?:\(\d+\))?)?$""", re.I)


def kind_of(sa_type):
    """``text``, ``binary`` or ``other`` for a reflected SQLAlchemy type."""
    if isinstance(sa_type, (sa.types._Binary, sa.LargeBinary)):
        return "binary"
    if isinstance(sa_type, (sa.String, sa.JSON, sa.Enum)):
        return "text"
    if isinstance(sa_type, sa.types.NullType):
        return "text"
    return "other"


def constant_default(text):
    """The SQL literal of a reflected server default when it is constant,
    else None (a function such as ``now()`` differs at every insert)."""
    if text is None:
        return None
    text = str(text).strip()
    return text if _CONSTANT.match(text) else None


def reflect(connection, table):
    """The :class:`TableShape` of ``table`` on a live connection."""
    inspector = sa.inspect(connection)
    columns = inspector.get_columns(table)
    key = tuple(inspector.get_pk_constraint(table)
                .get("constrained_columns") or ())
    kinds = tuple((c["name"], kind_of(c["type"])) for c in columns)
    defaults = tuple((c["name"], constant_default(c.get("default")))
                     for c in columns
                     if constant_default(c.get("default")) is not None)
    return TableShape(key, kinds, defaults)
