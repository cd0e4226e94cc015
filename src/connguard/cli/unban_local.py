"""``connguard ban delete ADDRESS --netns NS`` (or ``--local``): lift bans on a standalone host,
in the kernel and in the agent's ban book, so that the agent does not restore them.

The agent is the one keeper of its book (it holds it in memory and rewrites it every pass), so
the book is not edited behind its back: a lift request goes to ``lifts.json`` beside the book
(connguard.agent.banbook), then the ban leaves the kernel. A running agent forgets the ban at
its next pass and ignores the kernel's copy until it is gone; with no agent running (its lock
is free, and held here meanwhile) the book is rewritten at once."""

from __future__ import annotations

import fcntl
import ipaddress
import time
from pathlib import Path

import click

from connguard.cli.common import agent_dir
from connguard.exceptions import ConnguardError


def _matches(arg: str) -> set[str]:
    """The spellings under which the kernel and the book hold ``arg``: a single address bare,
    a prefix with its length; an IPv6 address also as its /64 (port bans are kept per /64)."""
    net = ipaddress.ip_network(arg, strict=True)
    forms = {str(net)}
    if net.prefixlen == net.max_prefixlen:
        forms.add(str(net.network_address))
        if net.version == 6:
            forms.add(str(ipaddress.ip_network(f"{net.network_address}/64", strict=False).network_address))
    return forms


def lift(args: tuple[str, ...], *, netns: str | None, port: str | None) -> None:
    from connguard.agent.banbook import BanBook, pending_lifts, request_lifts
    from connguard.nft import make_executor, observe
    from connguard.nft.bans import delete_ban
    from connguard.nft.executor import NftFailure

    where = f"netns {netns}" if netns else "this host"
    workdir = agent_dir(netns)
    book_path = workdir / "bans.json"
    executor = make_executor(netns)
    try:
        kernel = observe(executor, bans_only=True).bans
    except ConnguardError as exc:
        raise click.ClickException(str(exc)) from None
    book = _book_keys(book_path)
    failed = 0
    for arg in args:
        try:
            forms = _matches(arg)
        except ValueError:
            click.echo(f"Error: {arg}: not an address or prefix (a ban id needs the server: leave out --netns)",
                       err=True)
            failed += 1
            continue
        keys = sorted({(b.interface_name, b.ip_address) for b in kernel if b.ip_address in forms}
                      | {k for k in book if k[1] in forms}, key=lambda k: (k[0] or "", k[1]))
        if port is not None:
            keys = [k for k in keys if k[0] == port]
        if not keys:
            click.echo(f"Error: {arg}: no ban of it in {where}" + (f" on port {port}" if port else ""), err=True)
            failed += 1
            continue
        request_lifts(book_path, keys, time.time())
        in_kernel = {(b.interface_name, b.ip_address) for b in kernel}
        for ifname, ip in keys:
            if (ifname, ip) in in_kernel:
                try:
                    executor.batch({"nftables": [delete_ban(ip, ifname)]})
                except NftFailure as exc:
                    if "No such file" not in exc.message:  # expired meanwhile: lifted all the same
                        click.echo(f"Error: {arg}: the kernel refused to delete it: {exc.message.strip()}", err=True)
                        failed += 1
                        continue
            click.echo(f"lifted {ip} on {'port ' + ifname if ifname else 'every port'} in {where}")
    _settle_book(workdir, book_path, pending_lifts, BanBook)
    if failed:
        click.echo(f"Error: failed to delete {failed} of {len(args)} {'bans' if len(args) > 1 else 'ban'}", err=True)
        raise SystemExit(1)


def _book_keys(path: Path) -> set[tuple]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {(b.get("interface_name"), b.get("ip_address")) for b in data.get("bans", []) if isinstance(b, dict)}


def _settle_book(workdir: Path, book_path: Path, pending_lifts, BanBook) -> None:  # noqa: ANN001, N803
    """No agent: forget the bans in the book now, holding the agent's lock so none starts
    meanwhile. A running agent: wait (a few passes at most) for it to take the request."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "agent.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            BanBook(book_path).apply_lifts(time.time())
            return
    deadline = time.monotonic() + 10
    while pending_lifts(book_path, time.time()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pending_lifts(book_path, time.time()):
        click.echo("warning: the running agent has not taken the request within 10 s; it will at its next pass",
                   err=True)
