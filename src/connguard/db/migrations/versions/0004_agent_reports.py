"""agent reports: port status messages, per-(port, rule) counters, offenders, host usage

The typed report of the agent channel (docs/api.md, "Agent channel") is stored as its latest
values: ``ports.status_message``; ``port_counters`` (server-side monotonic totals per port and
rule, with the last raw totals the agent sent to detect its restarts); ``port_observations``
(bounded offender lists); and the host's conntrack usage, apply latency and errors and the
report-queue overflow on ``agents``. No history: metrics are scraped from these rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_COUNTERS = ('admitted', 'refused', 'would_refuse', 'set_full')


def upgrade() -> None:
    op.create_table('port_counters',
    sa.Column('port_id', sa.String(length=36), nullable=False),
    sa.Column('rule_id', sa.String(length=36), nullable=False),
    *[sa.Column(name, sa.BigInteger(), nullable=False) for name in _COUNTERS],
    *[sa.Column(f'last_{name}', sa.BigInteger(), nullable=False) for name in _COUNTERS],
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['port_id'], ['ports.id'], name=op.f('fk_port_counters_port_id_ports'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('port_id', 'rule_id', name=op.f('pk_port_counters'))
    )
    op.create_table('port_observations',
    sa.Column('port_id', sa.String(length=36), nullable=False),
    sa.Column('offenders', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['port_id'], ['ports.id'], name=op.f('fk_port_observations_port_id_ports'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('port_id', name=op.f('pk_port_observations'))
    )
    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_message', sa.String(length=1024), nullable=False, server_default=''))
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('conntrack_count', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('conntrack_max', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('apply_latency_seconds', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('apply_errors_total', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_apply_error', sa.String(length=1024), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('queue_overflow_total', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('last_full_report_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        for name in ('last_full_report_at', 'queue_overflow_total', 'last_apply_error', 'apply_errors_total',
                     'apply_latency_seconds', 'conntrack_max', 'conntrack_count', 'version'):
            batch_op.drop_column(name)
    with op.batch_alter_table('ports', schema=None) as batch_op:
        batch_op.drop_column('status_message')
    op.drop_table('port_observations')
    op.drop_table('port_counters')
