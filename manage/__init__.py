"""manage: zero-downtime database upgrades by expand, migrate and contract.

The library API lives in :mod:`manage.api`; migration scripts use the public
helpers in :mod:`manage.ops` and :mod:`manage.datamigration`.
"""
