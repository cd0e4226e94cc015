"""One module per resource; each exposes ``router``. ``ROUTERS`` is the explicit list."""

from connguard.server.routes import (
    agents,
    allowlist,
    bans,
    events,
    hosts,
    policies,
    ports,
    root,
    rule_types,
    rules,
    tokens,
)

API_ROUTERS = (policies.router, rule_types.router, rules.router, ports.router, bans.router, allowlist.router,
               events.router, agents.router, hosts.router, tokens.router)
ROOT_ROUTER = root.router
