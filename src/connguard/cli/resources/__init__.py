"""Resource commands (``policy``, ``rule``, ``rule-type``, ``port``, ``ban``, ``allow``,
``event``, ``agent``): thin wrappers over the REST API, one module per command group."""

from connguard.cli.resources.agent import agent
from connguard.cli.resources.allow import allow
from connguard.cli.resources.ban import ban
from connguard.cli.resources.event import event
from connguard.cli.resources.policy import policy
from connguard.cli.resources.port import port
from connguard.cli.resources.rule import rule, rule_type

# ``agent`` is not in COMMANDS: the name belongs to the agent daemon (``connguard agent``);
# its ``list`` subcommand is ``agent.commands["list"]``, to be attached to the daemon's group.
COMMANDS = (policy, rule, rule_type, port, ban, allow, event)

__all__ = ["COMMANDS", "agent", "allow", "ban", "event", "policy", "port", "rule", "rule_type"]
