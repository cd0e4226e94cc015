"""audit: who made each change, token expiry and last use

Events record who caused them: the token's id, project and role, and for an agent its host
(``actor_*``; null on events recorded before this revision and on those no token caused).
Tokens may expire (``expires_at``, null: never) and record when they were last used
(``last_used_at``, written at most once a minute per token, so authentication stays a read).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 11:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actor_token_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('actor_project_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('actor_role', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('actor_host', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_events_actor_token_id_created_at', ['actor_token_id', 'created_at', 'id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_actor_token_id_created_at')
        for name in ('actor_host', 'actor_role', 'actor_project_id', 'actor_token_id'):
            batch_op.drop_column(name)
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('expires_at')
