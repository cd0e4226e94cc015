"""connguard: connection-abuse protection for cloud VMs, enforced with nftables and conntrack.

Packages:
- ``connguard.model``: value objects and validation (one source of truth for field names).
- ``connguard.compiler``: pure ``HostState -> Ruleset`` compilation.
- ``connguard.nft``: rendering for libnftables JSON, the atomic applier and kernel read-back.
- ``connguard.agent``: standalone reconciliation loop, ban persistence and restore.
- ``connguard.lab``: network-namespace topologies and real traffic for tests and demos.
- ``connguard.cli``: the ``connguard`` command.
"""

__version__ = "0.1.0"
