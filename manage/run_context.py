"""What a manage run tells the migration scripts it runs.

The run context travels in the Alembic config's attributes.  Scripts do not
read it directly; the helpers in :mod:`manage.ops` do.
"""

import dataclasses
from typing import Callable, List

ATTR = "manage.run"


@dataclasses.dataclass
class RunContext:
    #: True during an online (rolling) upgrade: sync triggers are created.
    #: False during ``sync``, the offline upgrade: no triggers are needed.
    online: bool = True
    #: Extra Alembic on_version_apply callbacks (journal, reporting).
    on_version_apply: List[Callable] = dataclasses.field(default_factory=list)


def current(config):
    """The run context of an Alembic config (the default when absent)."""
    if config is None:
        return RunContext()
    return config.attributes.get(ATTR) or RunContext()
