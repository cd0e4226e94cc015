"""Exceptions raised by connguard. This module imports nothing from connguard.

Tree::

    ConnguardError
    ├── ValidationFailed     bad input (state file, API body); names the field and the reason
    ├── CompileError         a valid state that cannot be compiled (e.g. resource limits)
    ├── ApplyError           the kernel rejected a batch; carries the kernel's message and,
    │                        when located, the port and rule it belongs to
    ├── KernelUnavailable    nft/netlink missing, no permission, or the netns does not exist
    └── LabError             the namespace lab could not be built or driven
"""

from __future__ import annotations


class ConnguardError(Exception):
    """Base of every error connguard raises on purpose."""


class ValidationFailed(ConnguardError):
    """Input failed validation. ``errors`` is a list of (field, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{f}: {r}" if f else r for f, r in self.errors))


class CompileError(ConnguardError):
    """A state that validates but cannot be turned into a ruleset."""


class ApplyError(ConnguardError):
    """The kernel rejected an nftables batch; nothing of it was applied."""

    def __init__(self, message: str, *, kernel_message: str = "", where: str | None = None):
        self.kernel_message = kernel_message
        self.where = where
        text = message
        if where:
            text = f"{where}: {text}"
        if kernel_message:
            text = f"{text}: {kernel_message.strip()}"
        super().__init__(text)


class KernelUnavailable(ConnguardError):
    """The nftables tool or the requested network namespace cannot be used."""


class LabError(ConnguardError):
    """The namespace lab could not be built, driven or removed."""
