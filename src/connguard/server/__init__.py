"""The REST API (Neutron-compatible where Neutron has the concept): app factory, routes (one
module per resource), authentication, the NeutronError body and Prometheus metrics.

Route handlers are thin: they parse and present; ``connguard.db.services`` does the work.
"""

from connguard.server.app import create_app

__all__ = ["create_app"]
