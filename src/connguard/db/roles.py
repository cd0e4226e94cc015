"""Token roles. Imports nothing (the CLI uses it at start-up)."""

ROLES = ("admin", "member", "reader", "agent")
