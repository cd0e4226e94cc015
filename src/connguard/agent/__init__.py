"""The host agent: keeps the kernel in step with the desired state (a state file, or the
server's channel), repairs drift, and owns the ban book (bans and offender memory kept across
restarts and given back to a flushed table; the kernel escalates repeat offences itself). Its
doctrine is in DESIGN.md beside this file.

``run_server_agent(url, token, host, netns=None, workdir=..., interfaces="tap*", stop=event)``
is the in-process entry point of the server-driven agent (``connguard up`` uses it);
``ServerAgent`` is the same as a class with ``run()``/``stop()``.
"""

from connguard.agent.server_agent import AgentBusy, ServerAgent, run_server_agent

__all__ = ["AgentBusy", "ServerAgent", "run_server_agent"]
