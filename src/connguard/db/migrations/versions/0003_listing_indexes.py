"""indexes for collections paginated in SQL

Collections are filtered, sorted and paginated in SQL in (created_at, id) order, per project
(non-admins) or overall (admins): composite indexes serve both, and replace the single-column
project_id indexes they start with. ``shared`` serves the policy visibility test
(``project_id = X OR shared``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00
"""

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('qos_policies', schema=None) as batch_op:
        batch_op.drop_index('ix_qos_policies_project_id')
        batch_op.create_index('ix_qos_policies_project_id_created_at', ['project_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_qos_policies_created_at', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_qos_policies_shared', ['shared'], unique=False)

    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.drop_index('ix_ports_project_id')
        batch_op.create_index('ix_ports_project_id_created_at', ['project_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_ports_created_at', ['created_at', 'id'], unique=False)

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_project_id')
        batch_op.drop_index('ix_events_created_at')
        batch_op.create_index('ix_events_project_id_created_at', ['project_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_events_created_at_id', ['created_at', 'id'], unique=False)

    with op.batch_alter_table('bans', schema=None) as batch_op:
        batch_op.create_index('ix_bans_created_at', ['created_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('bans', schema=None) as batch_op:
        batch_op.drop_index('ix_bans_created_at')

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_created_at_id')
        batch_op.drop_index('ix_events_project_id_created_at')
        batch_op.create_index('ix_events_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_events_project_id', ['project_id'], unique=False)

    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.drop_index('ix_ports_created_at')
        batch_op.drop_index('ix_ports_project_id_created_at')
        batch_op.create_index('ix_ports_project_id', ['project_id'], unique=False)

    with op.batch_alter_table('qos_policies', schema=None) as batch_op:
        batch_op.drop_index('ix_qos_policies_shared')
        batch_op.drop_index('ix_qos_policies_created_at')
        batch_op.drop_index('ix_qos_policies_project_id_created_at')
        batch_op.create_index('ix_qos_policies_project_id', ['project_id'], unique=False)
