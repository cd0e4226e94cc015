"""The host agent: keeps the kernel in step with the desired state (standalone: a state file),
repairs drift, and owns the ban book (persistence across restarts, escalation of repeat
offences). Its doctrine is in DESIGN.md beside this file."""
