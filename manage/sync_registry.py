"""The registry of installed column syncs and copies, in ``manage_version``.

When an online expand revision calls :func:`manage.ops.sync_columns` or
:func:`manage.ops.copy_column_to_table`, the declaration is recorded as a
row of kind ``sync`` (:data:`manage.version_table.SYNC`), in the
revision's transaction: its name (the trigger group's or the copy's), the
expand revision that declared it (stamped by :mod:`manage.verify` when the
revision is applied) and, in ``detail`` as JSON:

``{"kind": "sync" | "copy", "tables": [...], "declarations": [...],
"create": [...], "drop": [...], "triggers": {name: {"table": ...,
"digest": ...}}}``

``declarations`` are the :class:`~manage.column_sync.ColumnSync` (or the
one :class:`~manage.column_sync.ColumnCopy`) serialised field by field;
``create`` and ``drop`` the statements that made and remove its triggers,
so that they can be re-created as they were; ``triggers`` what the catalog
showed right after they were made (the table each trigger is on and a
digest of its definition), so that :mod:`manage.verify` can tell whether
they are still installed as declared.  The contract step that drops the
triggers (:func:`manage.ops.drop_column_sync`, ``drop_column_copy``)
deletes the row.  An offline ``sync`` makes no triggers and records
nothing.
"""

import base64
import dataclasses
import hashlib
import json
import zlib
from typing import Dict, List, Optional, Tuple, Union

from manage import version_table as vt
from manage.column_sync import ColumnCopy, ColumnSync

SYNC = "sync"
COPY = "copy"
#: ``detail`` is a TEXT column, 65535 bytes on MySQL: longer statements
#: are kept compressed (``"create_z"``: base64 of zlib of the JSON list).
DETAIL_LIMIT = 60000

Declaration = Union[ColumnSync, ColumnCopy]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One recorded sync (a trigger group) or copy.

    ``triggers`` maps each trigger name to ``(table, digest)``; ``revision``
    is the expand revision that declared it (None until it is stamped).
    """

    name: str
    kind: str
    revision: Optional[str]
    tables: Tuple[str, ...]
    declarations: Tuple[Declaration, ...]
    create: Tuple[str, ...]
    drop: Tuple[str, ...]
    triggers: Tuple[Tuple[str, Tuple[Optional[str], Optional[str]]], ...]
    #: Set when its triggers were found missing or changed and re-created:
    #: the revision after which that was (``"expand"``: at the end of a
    #: ``manage db expand`` run).
    repaired_after: Optional[str] = None

    @property
    def table(self) -> str:
        """The table the declaration is of (a copy's source table)."""
        return self.tables[0]


def digest(definition: Optional[str]) -> Optional[str]:
    """A short, stable digest of a trigger definition (None stays None)."""
    if definition is None:
        return None
    return hashlib.sha256(definition.encode("utf-8")).hexdigest()[:20]


def record(connection, support, kind: str, name: str,
           declarations, create: List[str], drop: List[str]) -> None:
    """Record (or replace) what a sync or copy just installed.

    Call it after its ``create`` statements ran on ``connection`` (the
    revision's connection, so that the row commits with the triggers where
    DDL is transactional); it reads the catalog for the triggers made.
    ``kind`` is :data:`SYNC` or :data:`COPY`; ``support`` the dialect's
    :class:`~manage.dialects.base.DialectSupport`.
    """
    declarations = tuple(declarations)
    tables = [declarations[0].table]
    if kind == COPY:
        tables.append(declarations[0].target)
    present = support.describe_sync_triggers(connection)
    triggers = {t: {"table": present[t][0], "digest": digest(present[t][1])}
                for t in support.trigger_names(name) if t in present}
    detail = {"kind": kind, "tables": tables,
              "declarations": [serialise(d) for d in declarations],
              "create": list(create), "drop": list(drop),
              "triggers": triggers}
    if len(json.dumps(detail).encode("utf-8")) > DETAIL_LIMIT:
        detail["create_z"] = base64.b64encode(zlib.compress(json.dumps(
            detail.pop("create")).encode("utf-8"), 9)).decode("ascii")
    vt.ensure(connection)
    vt.upsert(connection, vt.SYNC, name, revision=None, state=vt.DONE,
              detail=json.dumps(detail, sort_keys=True))


def update_triggers(connection, support, entry: Entry,
                    repaired_after: Optional[str] = None) -> None:
    """Record the catalog's view of an entry's triggers again, after they
    were re-created (``repaired_after``: see :attr:`Entry.repaired_after`).
    """
    row = vt.read(connection, vt.SYNC).get(entry.name)
    if row is None:
        return
    detail = json.loads(row["detail"])
    present = support.describe_sync_triggers(connection)
    detail["triggers"] = {
        t: {"table": present[t][0], "digest": digest(present[t][1])}
        for t in support.trigger_names(entry.name) if t in present}
    detail["repaired_after"] = repaired_after
    vt.upsert(connection, vt.SYNC, entry.name,
              detail=json.dumps(detail, sort_keys=True))


def remove(connection, name: str) -> None:
    """Delete the record of a sync or copy (its triggers are dropped)."""
    if vt.exists(connection):
        vt.delete(connection, vt.SYNC, name)


def stamp(connection, revision: str) -> None:
    """Give the records made by the revision just applied its id."""
    table = vt.version_table
    connection.execute(table.update().where(
        (table.c.kind == vt.SYNC) & table.c.revision.is_(None)).values(
            revision=revision))


def read(connection) -> List[Entry]:
    """Every recorded sync and copy, by name; [] without manage's table."""
    if not vt.exists(connection):
        return []
    return [entry(row) for _, row in sorted(
        vt.read(connection, vt.SYNC).items())]


def entry(row: Dict) -> Entry:
    """The :class:`Entry` of one ``manage_version`` row."""
    detail = json.loads(row["detail"] or "{}")
    kind = detail.get("kind", SYNC)
    return Entry(
        name=row["name"], kind=kind, revision=row["revision"],
        tables=tuple(detail.get("tables", ())),
        declarations=tuple(deserialise(d, kind)
                           for d in detail.get("declarations", ())),
        create=tuple(detail["create"] if "create" in detail else json.loads(
            zlib.decompress(base64.b64decode(detail["create_z"])))
            if "create_z" in detail else ()),
        drop=tuple(detail.get("drop", ())),
        triggers=tuple(sorted(
            (name, (t.get("table"), t.get("digest")))
            for name, t in detail.get("triggers", {}).items())),
        repaired_after=detail.get("repaired_after"))


def serialise(declaration: Declaration) -> Dict:
    """A ColumnSync or ColumnCopy as a JSON-able dict of its fields."""
    return {f.name: getattr(declaration, f.name)
            for f in dataclasses.fields(declaration)}


def deserialise(data: Dict, kind: str = SYNC) -> Declaration:
    """The ColumnSync (``kind`` sync) or ColumnCopy a dict describes.

    Fields the declaration class no longer has are ignored; fields it has
    and the record lacks take their defaults.
    """
    cls = ColumnCopy if kind == COPY else ColumnSync
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _frozen(v) for k, v in data.items() if k in names})


def _frozen(value):
    """JSON lists back to tuples (dicts, per-dialect expressions, stay)."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value

