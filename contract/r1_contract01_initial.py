"""Release 1: nothing to remove; the root of the contract branch.

Revision ID: r1_contract01
"""

revision = "r1_contract01"
down_revision = None
branch_labels = ("contract",)
depends_on = "r1_expand01"


def upgrade():
    pass
