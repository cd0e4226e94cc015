"""drop brute-force rules over udp or sctp

Brute force counts completed TCP handshakes only: the model now refuses ``protocol: udp`` (a
UDP source address is a claim anyone can make, so a ban it triggered could be aimed at anyone)
and ``protocol: sctp`` on a brute-force rule (docs/dataplane.md, "Brute force"). A stored row
with either could no longer be read: listing its policy would fail, and so would every host
state that carries it (one invalid rule makes the whole snapshot invalid for the agent). Such
rows are deleted; their policies' revision is bumped, and so is every host's desired-state
revision, so that agents fetch the state without them. A ``sip`` rule without ``protocol``
stays: it now covers tcp/5060-5061 only. Data only; the downgrade restores nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:30:00
"""

from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

REFUSED = ('udp', 'sctp')

_rules = sa.table('qos_rules', sa.column('id', sa.String), sa.column('policy_id', sa.String),
                  sa.column('type', sa.String), sa.column('params', sa.JSON))
_policies = sa.table('qos_policies', sa.column('id', sa.String), sa.column('revision_number', sa.Integer),
                     sa.column('updated_at', sa.DateTime(timezone=True)))
_hosts = sa.table('host_revisions', sa.column('revision', sa.BigInteger))


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_rules.c.id, _rules.c.policy_id, _rules.c.params)
                        .where(_rules.c.type == 'brute_force')).all()
    # params is JSON: filtered here, the same way on SQLite and PostgreSQL
    gone = [(rid, pid) for rid, pid, params in rows if (params or {}).get('protocol') in REFUSED]
    if not gone:
        return
    conn.execute(sa.delete(_rules).where(_rules.c.id.in_([rid for rid, _ in gone])))
    conn.execute(sa.update(_policies).where(_policies.c.id.in_(sorted({pid for _, pid in gone})))
                 .values(revision_number=_policies.c.revision_number + 1, updated_at=datetime.now(timezone.utc)))
    conn.execute(sa.update(_hosts).values(revision=_hosts.c.revision + 1))


def downgrade() -> None:
    pass
