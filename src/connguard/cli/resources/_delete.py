"""Deleting several bans or allowlist entries, each named by id or by address/prefix.

As openstack's client: every argument is tried even when one fails, each failure is printed,
and the command ends with "failed to delete N of M ..." and exit 1 if any did."""

from __future__ import annotations

import ipaddress
import re
import sys
import click

from connguard.cli.client import ApiError, Client

_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def spellings(arg: str) -> list[str] | None:
    """The forms under which the server may hold an address or prefix (10.0.0.5 and
    10.0.0.5/32: manual bans are stored as prefixes, detected ones as the kernel names the
    remote), or None if ``arg`` is not one."""
    try:
        net = ipaddress.ip_network(arg, strict=True)
    except ValueError:
        return None
    forms = [str(net)]
    if net.prefixlen == net.max_prefixlen:
        forms.append(str(net.network_address))
    return forms


def delete_each(client: Client, args: tuple[str, ...], *, collection: str, key: str, field: str,
                what: str, plural: str) -> None:
    failed = 0
    for arg in args:
        try:
            if _UUID.match(arg):
                ids = [arg]
            else:
                forms = spellings(arg)
                if forms is None:
                    raise ApiError(400, "BadRequest", f"{arg!r} is neither a {what} id nor an address or prefix")
                ids = sorted({row["id"] for form in forms for row in client.get(collection, **{field: form})[key]})
                if not ids:
                    raise ApiError(404, "NotFound", f"no {what} of {arg}")
            for id_ in ids:
                client.delete(f"{collection}/{id_}")
        except ApiError as exc:
            failed += 1
            click.echo(f"Error: {arg}: {exc.message}", err=True)
    if failed:
        click.echo(f"Error: failed to delete {failed} of {len(args)} {plural if len(args) > 1 else what}", err=True)
        sys.exit(1)
