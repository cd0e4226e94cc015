"""The host agent: keeps the kernel in step with the desired state (standalone: a state file),
repairs drift, and owns the ban book (bans and offender memory kept across restarts and given
back to a flushed table; the kernel escalates repeat offences itself). Its doctrine is in DESIGN.md beside this file."""
