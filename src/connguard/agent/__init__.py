"""The host agent: keeps the kernel in step with the desired state (a state file, or the
server's channel), repairs drift, and owns the ban book (bans and offender memory kept across
restarts and given back to a flushed table; the kernel escalates repeat offences itself). Its
doctrine is in DESIGN.md beside this file.

``run_server_agent(url, token, host, netns=None, workdir=..., interfaces="tap*", stop=event)``
is the in-process entry point of the server-driven agent (``connguard up`` uses it);
``ServerAgent`` is the same as a class with ``run()``/``stop()``.
"""

from __future__ import annotations

__all__ = ["AgentBusy", "ServerAgent", "run_server_agent"]


def __getattr__(name: str):
    # loaded on first use (PEP 562): `connguard status` imports agent.statusfile, which must not
    # pull in the server agent's HTTP client and the model behind it
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from connguard.agent import server_agent

    value = getattr(server_agent, name)
    globals()[name] = value
    return value
