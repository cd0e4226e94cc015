"""``connguard up [--lab]``: the server and this host's agent in one foreground process.

On a fresh machine: creates the data directory, the SQLite database (migrated), an admin token
(saved to the CLI's config file, so the next ``connguard policy list`` needs no flag) and an
agent token for this host; then serves the API (uvicorn, main loop in a thread) and runs the
server-driven agent (``connguard.agent.run_server_agent``, in another thread) until SIGINT or
SIGTERM. A second run reuses the directory, the database and both tokens (kept in
``<data-dir>/up-tokens.json``, mode 0600, checked against the database). One ``up`` per data
directory: ``<data-dir>/up.lock`` is held with flock(2) for the process's life (released by
the kernel if it dies, so a stale file never blocks) and names its pid.

On exit the kernel keeps enforcing what the agent applied (the agent is not the enforcement);
``--clean`` deletes connguard's table instead. ``--lab`` is in up_lab.py.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from connguard.cli.server import DEFAULT_BIND, parse_bind
from connguard.cli.up_state import Lock, tokens as load_tokens

log = logging.getLogger("connguard.up")
LAB_FILE = "up-lab"         # the prefix of the lab 'up --lab' built, until it is removed
STOP_BUDGET = 8.0           # seconds for everything to stop after the signal (the promise is 10)


def _listen(bind: str) -> tuple[socket.socket, str]:
    """A listening socket for ``bind`` and the URL clients use (a wildcard bind is reached on
    loopback). Bound here, before anything else starts, so a busy port is a clear error."""
    head, _, tail = bind.rpartition(":")
    host, port = (head.strip("[]") or "127.0.0.1", 0) if tail == "0" and head else parse_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {bind}: {exc.strerror} (another connguard server? "
                                   "choose another with --bind HOST:PORT)") from None
    port = sock.getsockname()[1]
    client_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return sock, f"http://{f'[{client_host}]' if ':' in client_host else client_host}:{port}"


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # httpx logs every request at INFO: the agent's long-polls and reports would drown the rest;
    # alembic says "setup plugin ..." a dozen times on each start.
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


class _Thread(threading.Thread):
    """A daemon thread that keeps the exception that ended it."""

    def __init__(self, name: str, target: Any):
        super().__init__(name=name, daemon=True)
        self._fn, self.error = target, None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the main loop
            self.error = exc


@click.command("up")
@click.option("--data-dir", envvar="CONNGUARD_DATA_DIR", default="/var/lib/connguard", show_default=True,
              type=click.Path(file_okay=False), help="Database, tokens, agent state (env CONNGUARD_DATA_DIR).")
@click.option("--db", "db_url", metavar="URL", help="SQLAlchemy URL (default: SQLite in the data directory).")
@click.option("--bind", default=DEFAULT_BIND, show_default=True, metavar="HOST:PORT",
              help="Where the API listens (port 0: any free port; the URL is printed).")
@click.option("--host", "host_name", default=socket.gethostname(), show_default=True,
              help="This host's name in the API (binding:host_id of its ports).")
@click.option("--netns", metavar="NS", help="Run the local agent in this network namespace (default: this host's).")
@click.option("--interfaces", default="tap*", show_default=True, help="Interfaces the agent discovers as ports.")
@click.option("--no-agent", is_flag=True, help="Serve the API only.")
@click.option("--lab", is_flag=True, help="Also build a namespace lab, protect its VMs and attack them now and then.")
@click.option("--attack-interval", type=click.FloatRange(5, 3600), default=20, show_default=True,
              help="--lab: seconds between two rounds of attacks.")
@click.option("--clean", is_flag=True, help="On exit, delete connguard's nftables table (default: keep enforcing).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and the API's access log.")
def up_cmd(data_dir: str, db_url: str | None, bind: str, host_name: str, netns: str | None, interfaces: str,
           no_agent: bool, lab: bool, attack_interval: float, clean: bool, verbose: bool) -> None:
    """Run the API server and this host's agent in one process (Ctrl-C stops both)."""
    from connguard.cli import config
    from connguard.extras import MissingExtra, require_for_db

    try:  # before anything is made: an agent-only install has no server stack
        require_for_db(db_url or "sqlite://", "connguard up")
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None

    _logging(verbose)
    if (lab or not no_agent) and os.geteuid() != 0:
        raise click.ClickException("connguard up needs root: its agent writes nftables rules "
                                   "(or give --no-agent to serve the API only)")
    if lab and (netns or no_agent):
        raise click.UsageError("--lab runs the agent in the lab's host namespace: drop --netns/--no-agent")
    if netns and not os.path.exists(f"/run/netns/{netns}"):
        raise click.BadParameter(f"network namespace {netns!r} does not exist (ip netns list)", param_hint="'--netns'")
    ddir = Path(data_dir).absolute()
    try:
        ddir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise click.ClickException(f"cannot create the data directory {ddir}: {exc.strerror}") from None
    os.environ["CONNGUARD_DATA_DIR"] = str(ddir)  # every default path below follows it
    lock = Lock(ddir)
    try:
        sock, url = _listen(bind)
        db = db_url or f"sqlite:///{ddir / 'connguard.db'}"
        from connguard.cli.daemon_config import check_db_url, create_private, sqlite_path

        try:
            check_db_url(db)  # a relative or mistyped SQLite URL would silently make a new database
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--db'") from None
        if sqlite_path(db) is not None:
            create_private(sqlite_path(db))  # 0600: it holds the tokens' hashes and every policy
        agent_host = f"{host_name}-lab" if lab else host_name
        from connguard.db.session import SchemaTooNew

        try:
            tokens = load_tokens(ddir, db, [] if no_agent else [agent_host])
        except SchemaTooNew as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a database we cannot open: say which and why
            raise click.ClickException(f"cannot open the database {db}: {exc}") from None
        cfg = config.save({"url": url, "token": tokens["admin"]})
        rc = _run(sock, url, db, tokens, agent_host, netns, interfaces, no_agent, lab, attack_interval,
                  clean, verbose, cfg, ddir)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are in place: nothing runs yet
        log.info("interrupted while starting")
        rc = 130
    finally:
        lock.release()
    sys.exit(rc)


def _run(sock: socket.socket, url: str, db: str, tokens: dict[str, Any], host: str, netns: str | None,
         interfaces: str, no_agent: bool, lab: bool, attack_interval: float, clean: bool, verbose: bool,
         cfg: Path, ddir: Path) -> int:
    import uvicorn

    from connguard.cli.client import ApiError, Client
    from connguard.exceptions import ConnguardError
    from connguard.server import create_app

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.info("%s: already stopping", signal.Signals(signum).name)
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    app = create_app(db)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=verbose, lifespan="on",
                                           timeout_graceful_shutdown=2))
    srv = _Thread("server", lambda: server.run(sockets=[sock]))
    srv.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not srv.is_alive() or time.monotonic() > deadline or stop.is_set():
            server.should_exit = True
            raise click.ClickException(f"the API server did not start: {srv.error or 'interrupted'}")
        time.sleep(0.05)
    admin = Client(url, tokens["admin"])
    the_lab = None
    agent = agent_stop = agent_metrics = None
    rc = 0
    try:
        try:
            if lab:
                the_lab = _lab_up(admin, host, attack_interval, ddir)
                netns = the_lab.host
            if not no_agent:
                agent_stop = threading.Event()
                agent, agent_metrics = _start_agent(url, tokens["agents"][host], host, netns, ddir, interfaces,
                                                    agent_stop, app.state.metrics_registry)
        except (ConnguardError, ApiError) as exc:
            log.error("%s", getattr(exc, "message", None) or exc)
            return 1
        _banner(url, cfg, ddir, db, host, netns, no_agent, the_lab)
        while not stop.wait(0.5):
            if agent_metrics is not None:
                agent_metrics.sample()
            if not srv.is_alive():
                log.error("the API server stopped: %s", srv.error or "no error given")
                rc = 1
                break
            if agent is not None and not agent.is_alive():
                log.error("the agent stopped: %s", agent.error or "it returned")
                rc = 1
                break
    finally:
        _shutdown(stop_agent=agent_stop, agent=agent, server=server, srv=srv, admin=admin, host=host,
                  the_lab=the_lab, netns=netns, clean=clean, no_agent=no_agent, ddir=ddir)
    return rc


def _shutdown(*, stop_agent: threading.Event | None, agent: _Thread | None, server: Any, srv: _Thread,
              admin: Any, host: str, the_lab: Any, netns: str | None, clean: bool, no_agent: bool,
              ddir: Path) -> None:
    """Attacker, agent, lab ports, server, table (--clean), lab: in that order, within
    STOP_BUDGET seconds whatever hangs (each wait is bounded)."""
    t0 = time.monotonic()
    if the_lab is not None:
        from connguard.lab.spawn import reap

        reap(the_lab.prefix, grace=1.0)  # no new attack while we stop
    if stop_agent is not None:
        stop_agent.set()
    # Answer the agent's long-poll now (within the notifier's re-read second) rather than have
    # uvicorn cancel it after its grace period: the agent then sees stop and ends cleanly.
    server.config.app.state.closing = True
    server.config.app.state.notifier.notify()
    if agent is not None:
        agent.join(timeout=2.0)
    if the_lab is not None:
        try:
            from connguard.cli.up_lab import unregister

            unregister(admin, host)
        except Exception as exc:  # noqa: BLE001 - the next 'up --lab' deletes them too
            log.warning("could not delete the lab's ports: %s", exc)
    server.should_exit = True
    if agent is not None:
        agent.join(timeout=max(0.5, STOP_BUDGET - 2 - (time.monotonic() - t0)))
        if agent.is_alive():
            log.warning("the agent did not stop in time; exiting without it")
    srv.join(timeout=max(0.5, STOP_BUDGET - 1 - (time.monotonic() - t0)))
    if clean:
        _clean(netns)
    if the_lab is not None:
        log.info("removing lab %s ...", the_lab.prefix)
        the_lab.down()
        _forget_lab(ddir, the_lab.prefix)
    log.info("stopped in %.1f s%s", time.monotonic() - t0,
             "" if clean or no_agent or the_lab is not None
             else "; the kernel keeps enforcing (--clean removes the rules)")


def _start_agent(url: str, token: str, host: str, netns: str | None, ddir: Path, interfaces: str,
                 stop: threading.Event, registry: Any) -> tuple[_Thread, Any]:
    """The agent on its thread, and its metrics on the server's registry."""
    from connguard.agent import ServerAgent
    from connguard.cli.up_metrics import AgentMetrics

    workdir = ddir / "agent" / (netns or "_host")
    workdir.mkdir(parents=True, exist_ok=True)
    agent = ServerAgent(url, token, host, netns=netns, workdir=workdir, interfaces=interfaces, stop_event=stop)
    metrics = AgentMetrics(registry, agent, host)
    thread = _Thread("agent", agent.run)
    thread.start()
    log.info("agent for host %s started (%s, state in %s)", host, f"netns {netns}" if netns else "this host's network",
             workdir)
    return thread, metrics


def _lab_up(admin: Any, host: str, interval: float, ddir: Path) -> Any:
    from connguard.cli import up_lab
    from connguard.lab import Lab
    from connguard.lab.netns import LAB_NAME_RE
    from connguard.lab.topology import remove

    # A lab whose 'up' was killed (SIGKILL, power loss) is still there: we hold the lock, so
    # nobody uses it; remove it rather than leave namespaces and an attacker behind.
    stale = (ddir / LAB_FILE).read_text().strip() if (ddir / LAB_FILE).exists() else ""
    if LAB_NAME_RE.match(stale):
        gone = remove(stale)
        _forget_lab(ddir, stale)
        if gone:
            log.info("removed lab %s left by an earlier run (%d namespaces)", stale, len(gone))
    log.info("building the lab (a host namespace, two VMs, an attacker) ...")
    the_lab = Lab.up(hosts=1, vms=2, clients=1, sources=8)
    (ddir / LAB_FILE).write_text(the_lab.prefix + "\n")
    try:
        ports = up_lab.register(admin, the_lab, host)
        log.info("lab %s: ports %s of host %s carry policy %r", the_lab.prefix,
                 ", ".join(f"{p['interface_name']} ({p['fixed_ips'][0]['ip_address']})" for p in ports), host,
                 up_lab.POLICY)
        attacker = the_lab.spawn([sys.executable, "-m", "connguard.cli.up_lab", the_lab.prefix,
                                  "--interval", str(interval)], name="attacker")
        threading.Thread(target=_relay, args=(attacker,), daemon=True, name="attacker-log").start()
    except BaseException:
        the_lab.down()
        _forget_lab(ddir, the_lab.prefix)
        raise
    return the_lab


def _forget_lab(ddir: Path, prefix: str) -> None:
    """Its agent's directory (ban book, cached snapshot of namespaces that are gone) and its
    record."""
    import shutil

    shutil.rmtree(ddir / "agent" / f"{prefix}-host", ignore_errors=True)
    (ddir / LAB_FILE).unlink(missing_ok=True)


def _relay(proc: Any) -> None:
    from connguard.cli.up_lab import describe

    while True:
        line = proc.lines.get()
        if line is None:
            if proc.proc.poll() not in (None, 0, -signal.SIGTERM, -signal.SIGKILL):
                log.warning("lab attacker ended: %s", proc.error_text())
            return
        log.info("%s", describe(line))


def _clean(netns: str | None) -> None:
    from connguard.exceptions import ConnguardError
    from connguard.names import FAMILY, TABLE
    from connguard.nft import make_executor

    try:
        make_executor(netns).batch({"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]})
        log.info("--clean: deleted table %s %s%s", FAMILY, TABLE, f" in {netns}" if netns else "")
    except ConnguardError as exc:
        log.warning("--clean: %s", exc)
    except Exception as exc:  # noqa: BLE001 - NftFailure: there was no table
        log.info("--clean: nothing to delete (%s)", str(exc).splitlines()[0] if str(exc) else exc)


def _banner(url: str, cfg: Path, ddir: Path, db: str, host: str, netns: str | None, no_agent: bool,
            the_lab: Any) -> None:
    lines = [f"connguard is up. API: {url}",
             f"  admin token saved in {cfg} (try: connguard policy list)",
             f"  data directory {ddir}, database {db}"]
    if not no_agent:
        lines.append(f"  agent of host {host} enforcing in {f'namespace {netns}' if netns else 'this host'}")
    if the_lab is not None:
        lines.append(f"  lab {the_lab.prefix}: attacks every few seconds; watch: connguard event list --follow")
    lines.append("  Ctrl-C stops")
    click.echo("\n".join(lines))
    sys.stdout.flush()
