"""Helpers shared by the local (kernel-facing) commands."""

from __future__ import annotations

import os
from pathlib import Path

import click

from connguard.exceptions import ConnguardError, ValidationFailed

netns_option = click.option(
    "--netns", metavar="NS", default=None,
    help="Do every kernel operation inside this existing network namespace.")


def data_dir() -> Path:
    return Path(os.environ.get("CONNGUARD_DATA_DIR", "/var/lib/connguard"))


def agent_dir(netns: str | None) -> Path:
    """Where a standalone agent keeps its bans and status, one directory per namespace."""
    return data_dir() / "agent" / (netns or "_host")


def fail(exc: ConnguardError) -> "click.ClickException":
    if isinstance(exc, ValidationFailed):
        lines = [f"{field}: {reason}" if field else reason for field, reason in exc.errors]
        return click.ClickException("invalid state:\n  " + "\n  ".join(lines))
    return click.ClickException(str(exc))
