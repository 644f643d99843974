"""Run the tapdb: an ovsdb-server holding the packaged Tap schema.

One directory holds everything of one member: the database file, its unix
socket, control socket, pid file and log, and a small local database naming
the agents' listeners.  ``start`` creates the database when missing
(standalone, or as a Raft cluster member), starts the server, converts the
data online when the packaged schema is newer, and makes the agents' RBAC
role the packaged one.

Listeners come in two kinds.  Operators' (``--remote``, and the unix socket)
give full access to whoever connects (with TLS: whoever holds a certificate of
the tapdb CA).  Agents' (``--chassis-remote``, TLS only) carry the role
``sdnagent-chassis``: ovsdb-server then lets a client write only the rows
that name the chassis in its certificate's CN.  ovsdb-server applies a role
only to listeners it reads through a reference column, hence the local
database (``Tap_Local``: each member of a cluster has its own listeners).

Agents' listeners belong to a *relay* (:class:`TapdbRelay`, ``ovsdb-server
relay:Tap:...``): a server that keeps a copy of tapdb from its source (the
members), applies the agents' role itself and forwards the writes it permits.
ovsdb-server takes one CA for all its TLS, so a process that accepts chassis
certificates accepts them everywhere it listens: agents therefore meet only
relays, whose one other door is their unix socket, and members trust the
tapdb CA alone.  A member given ``--chassis-ca-cert`` runs its relay beside
it; a member given agents' listeners without it (one CA for everybody) serves
them itself, as a lab does.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from sdnagent.tapdb import rpc, schema
from sdnagent.tls import Tls

DEFAULT_DIR = schema.DEFAULT_DIR


def plain_exposed(remotes: Sequence[str]) -> list[str]:
    """The plain-TCP remotes that listen on something other than loopback: anyone who
    reaches them can read and write every table, unauthenticated."""
    exposed = []
    for r in remotes:
        kind, _, rest = r.partition(":")
        if kind != "ptcp":
            continue
        addr = rest.partition(":")[2].strip("[]")
        if addr in ("", "0.0.0.0", "::") or not _loopback(addr):
            exposed.append(r)
    return exposed


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def role_in(found: list) -> Optional[dict]:
    """The agents' role as a select of RBAC_Role and of RBAC_Permission read it (the
    form of :func:`schema.role_rows`), or None when it is not there exactly once."""
    if any("error" in r for r in found if isinstance(r, dict)):
        return None
    roles = [r for r in found[0]["rows"] if r["name"] == schema.CHASSIS_ROLE]
    if len(roles) != 1:
        return None
    perms = {r["_uuid"][1]: r for r in found[1]["rows"]}
    out = {}
    for table, ref in roles[0]["permissions"][1]:
        p = perms.get(ref[1])
        if p is None or p["table"] != table:
            return None
        auth = rpc.atoms(p["authorization"])
        if len(auth) != 1:
            return None
        out[table] = (auth[0], p["insert_delete"], tuple(sorted(rpc.atoms(p["update"]))))
    return out


class TapdbServerError(RuntimeError):
    """The server could not be created, started, stopped or converted."""


SETTLE = 10.0  # seconds a cluster member's start waits for the cluster before going on


def _run(args: Sequence[str], timeout: float = 30) -> str:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise TapdbServerError(f"{args[0]} is not installed (Debian package openvswitch-switch)") from None
    except subprocess.TimeoutExpired:
        raise TapdbServerError(f"{' '.join(args)} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        raise TapdbServerError(f"{' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


class TapdbServer:
    """One tapdb member living in ``directory``."""

    def __init__(self, directory: os.PathLike | str = DEFAULT_DIR):
        self.dir = Path(directory).absolute()
        self.db = self.dir / "tapdb.db"
        self.sock = self.dir / "tapdb.sock"
        self.ctl = self.dir / "tapdb.ctl"
        self.pidfile = self.dir / "tapdb.pid"
        self.log = self.dir / "tapdb.log"
        self.local_db = self.dir / "listeners.db"

    @property
    def remote(self) -> str:
        """The local connection string clients use."""
        return f"unix:{self.sock}"

    # ------------------------------------------------------------ lifecycle

    def create(self, cluster: Optional[str] = None, local: Optional[str] = None,
               members: Sequence[str] = ()) -> bool:
        """Create the database file if missing; True when it was created."""
        if self.db.exists():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        if cluster is None:
            _run(["ovsdb-tool", "create", str(self.db), str(schema.SCHEMA_PATH)])
            _run(["ovsdb-tool", "transact", str(self.db), json.dumps(schema.initial_transaction())])
        elif cluster == "create":
            if not local:
                raise TapdbServerError("--cluster create needs --local tcp:IP:PORT")
            seed = self.dir / "seed.db"
            seed.unlink(missing_ok=True)
            _run(["ovsdb-tool", "create", str(seed), str(schema.SCHEMA_PATH)])
            _run(["ovsdb-tool", "transact", str(seed), json.dumps(schema.initial_transaction())])
            _run(["ovsdb-tool", "create-cluster", str(self.db), str(seed), local])
            seed.unlink()
        elif cluster == "join":
            if not local or not members:
                raise TapdbServerError("--cluster join needs --local tcp:IP:PORT and at least one "
                                       "--member tcp:IP:PORT of the cluster")
            _run(["ovsdb-tool", "join-cluster", str(self.db), schema.NAME, local, *members])
        else:
            raise TapdbServerError(f"--cluster: {cluster!r} is not allowed; use create or join")
        return True

    def start(self, remotes: Sequence[str] = (), cluster: Optional[str] = None,
              local: Optional[str] = None, members: Sequence[str] = (),
              timeout: float = 30, tls: Optional[Tls] = None,
              chassis_remotes: Sequence[str] = (), chassis_ca: Optional[str] = None,
              relay_of: Sequence[str] = (), settle: float = SETTLE) -> list[str]:
        """Create if needed, run, convert, and write the agents' role; returns what was
        done, for people.

        ``remotes``: operators' listeners; ``chassis_remotes``: agents' (``pssl:``
        only: the role is enforced on the certificate's CN), served by a relay
        beside the member when ``chassis_ca`` (the CA of agents' certificates)
        is given.  A cluster member's relay also takes ``relay_of``, the
        members' listeners: it copies from this member while it lives and from
        another when it stops (a relay keeps telling its agents it is connected
        while its source is gone, so they would not move).  ``tls``: the
        server's key and certificate and the CA its clients' (and Raft peers')
        certificates must be signed by, for ``pssl:`` remotes and ``ssl:``
        cluster addresses.

        A cluster member that finds no quorum within ``settle`` seconds (the
        first member of a stopped cluster to start) still succeeds: the schema
        and the role are checked by the next start that finds the cluster."""
        check_chassis_remotes(chassis_remotes)
        tls_needed = (any(r.startswith("pssl:") for r in [*remotes, *chassis_remotes])
                      or (local or "").startswith("ssl:"))
        if tls is None and tls_needed:
            raise TapdbServerError("pssl: remotes and ssl: cluster addresses need "
                                   "--private-key, --certificate and --ca-cert")
        if chassis_ca and not chassis_remotes:
            raise TapdbServerError("--chassis-ca-cert: give it with --chassis-remote (the "
                                   "agents' listeners it is for)")
        own_listeners = () if chassis_ca else chassis_remotes
        clustered = cluster is not None or self._is_clustered()
        if chassis_ca and clustered and not relay_of:
            raise TapdbServerError("--relay-of: a cluster member's relay needs the members' "
                                   "listeners (ssl:IP:PORT,...), to follow the cluster when "
                                   "this member stops")
        if relay_of and not (chassis_ca and clustered):
            raise TapdbServerError("--relay-of: only for a relay, or beside a cluster member "
                                   "with --chassis-remote and --chassis-ca-cert")
        done = []
        if self.create(cluster, local, members):
            done.append(f"created {self.db}" + (f" ({cluster} cluster at {local})" if cluster else ""))
        if self.pid() is not None:
            done.append(f"already running (pid {self.pid()})")
        else:
            self._write_listeners(own_listeners)
            args = ["ovsdb-server", str(self.db), str(self.local_db),
                    f"--remote=punix:{self.sock}",
                    f"--remote=db:{schema.LOCAL_NAME},Local_Config,connections",
                    f"--unixctl={self.ctl}", f"--pidfile={self.pidfile}",
                    f"--log-file={self.log}", "--detach", "--no-chdir"]
            args += [f"--remote={r}" for r in remotes]
            if tls is not None:
                args += [f"--private-key={tls.private_key}", f"--certificate={tls.certificate}",
                         f"--ca-cert={tls.ca_cert}"]
            _run(args, timeout)
            done.append(f"started ovsdb-server (pid {self.pid()}) on {self.remote}"
                        + "".join(f", {r}" for r in remotes)
                        + "".join(f", {r} (agents)" for r in own_listeners))
        if self._is_clustered() and not self.is_connected(timeout=settle):
            done.append(f"the cluster has no quorum yet (not found within {settle:g} s); "
                        "the schema and the agents' role are checked by the next member "
                        "to start, or by 'sdnagent-tapdb start' again")
        else:
            converted = self.convert_if_needed(timeout)
            if converted:
                done.append(converted)
            if self.ensure_role(timeout):
                done.append(f"wrote the agents' role {schema.CHASSIS_ROLE}")
        clock = self.start_clock()
        if clock:
            done.append(clock)
        if chassis_ca:
            assert tls is not None  # pssl: listeners were checked to have it
            done += self.relay.start(",".join([self.remote, *relay_of]), chassis_remotes, tls,
                                     chassis_ca, timeout)
        return done

    @property
    def clock_pidfile(self) -> Path:
        return self.dir / "clock.pid"

    def start_clock(self, timeout: float = 10) -> Optional[str]:
        """Run the session clock (:mod:`sdnagent.tapdb.clock`) beside this member, unless
        it runs; what was done, or None."""
        if _pid_of(self.clock_pidfile) is not None:
            return None
        self.clock_pidfile.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "sdnagent.tapdb.clock", "--db", self.remote,
             "--pidfile", str(self.clock_pidfile), "--log-file", str(self.dir / "clock.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)
        deadline = time.monotonic() + timeout
        while _pid_of(self.clock_pidfile) is None:
            if proc.poll() is not None:
                raise TapdbServerError(f"the session clock exited ({proc.returncode}); see "
                                       f"{self.dir / 'clock.log'}")
            if time.monotonic() > deadline:
                raise TapdbServerError(f"the session clock did not start within {timeout:g} s")
            time.sleep(0.02)
        return f"started the session clock (pid {proc.pid})"

    @property
    def relay(self) -> "TapdbRelay":
        """The relay that serves this member's agents, when it has one."""
        return TapdbRelay(self.dir / "relay")

    def _write_listeners(self, chassis_remotes: Sequence[str]) -> None:
        _write_listeners(self.local_db, chassis_remotes)

    def ensure_role(self, timeout: float = 30) -> bool:
        """Make the agents' role in tapdb the packaged one; True when it was written.
        In a cluster any member may do it: the write goes to the leader."""
        try:
            conn = rpc.connect(self.remote, timeout)
        except rpc.RpcError as exc:
            raise TapdbServerError(f"cannot reach {self.remote}: {exc}") from exc
        try:
            found = conn.transact(
                {"op": "select", "table": "RBAC_Role", "where": []},
                {"op": "select", "table": "RBAC_Permission", "where": []})
            if role_in(found) == schema.role_rows():
                return False
            result = conn.transact(*schema.role_transaction())
        except rpc.RpcError as exc:
            raise TapdbServerError(f"cannot write the agents' role: {exc}") from exc
        finally:
            conn.close()
        errors = [r for r in result if isinstance(r, dict) and "error" in r]
        if errors:
            raise TapdbServerError(f"cannot write the agents' role: {errors[0]}")
        return True

    def is_connected(self, timeout: float = 5) -> bool:
        try:
            _run(["ovsdb-client", f"--timeout={max(1, int(timeout))}", "wait", self.remote,
                  schema.NAME, "connected"], timeout + 1)
            return True
        except TapdbServerError:
            return False

    def convert_if_needed(self, timeout: float = 30) -> Optional[str]:
        """Convert online (works for standalone and clustered) when the schema is newer."""
        _run(["ovsdb-client", f"--timeout={int(timeout)}", "wait", self.remote, schema.NAME,
              "connected"], timeout + 1)
        current = _run(["ovsdb-client", "get-schema-version", self.remote, schema.NAME]).strip()
        packaged = schema.version()
        if schema.version_tuple(current) > schema.version_tuple(packaged):
            raise TapdbServerError(f"the database has schema version {current}, newer than this "
                                   f"package's {packaged}; upgrade sdnagent")
        if current == packaged:
            return None
        pruned = self._prune_over_bounds(timeout)
        _run(["ovsdb-client", "convert", self.remote, str(schema.SCHEMA_PATH)], timeout)
        return (f"converted the database from schema {current} to {packaged}"
                + (f" (first removed {pruned} chassis-written row(s) or external_ids over "
                   "the new bounds; agents write theirs again)" if pruned else ""))

    def _prune_over_bounds(self, timeout: float) -> int:
        """Delete what chassis wrote beyond the packaged schema's bounds (an older one
        had none), in one transaction, so that the conversion can take the rest."""
        try:
            conn = rpc.connect(self.remote, timeout)
        except rpc.RpcError as exc:
            raise TapdbServerError(f"cannot reach {self.remote}: {exc}") from exc
        try:
            present = set(conn.call("get_schema", schema.NAME)["tables"])
            tables = sorted(t for t in schema.CHASSIS_PERMISSIONS if t in present)
            result = conn.transact(*({"op": "select", "table": t, "where": []} for t in tables))
            found = {t: r.get("rows", []) for t, r in zip(tables, result)}
            ops, count = schema.pruning_transaction(found)
            if ops:
                result = conn.transact(*ops)
                errors = [r for r in result if isinstance(r, dict) and "error" in r]
                if errors:
                    raise TapdbServerError(f"cannot remove rows over the new bounds: {errors[0]}")
            return count
        except rpc.RpcError as exc:
            raise TapdbServerError(f"cannot read the rows chassis wrote: {exc}") from exc
        finally:
            conn.close()

    def pid(self) -> Optional[int]:
        """The running server's pid, or None."""
        return _pid_of(self.pidfile)

    def stop(self, timeout: float = 10) -> bool:
        """Stop the server and its relay; False when neither was running."""
        relay = self.relay.stop(timeout)
        clock = _stop(lambda: _pid_of(self.clock_pidfile), timeout)
        return _stop(self.pid, timeout) or relay or clock

    def status(self) -> dict[str, str]:
        """What a person asks first: running, where, which schema, cluster role."""
        pid = self.pid()
        info = {"directory": str(self.dir), "database": str(self.db),
                "state": "running" if pid else "stopped"}
        if not self.db.exists():
            info["state"] = "no database"
            return info
        if pid:
            info["pid"] = str(pid)
            info["socket"] = self.remote
            try:
                info["schema"] = _run(["ovsdb-client", "--timeout=5", "get-schema-version",
                                       self.remote, schema.NAME]).strip()
            except TapdbServerError as exc:
                info["schema"] = f"unavailable ({exc})"
            if self._is_clustered():
                try:
                    out = _run(["ovs-appctl", "-t", str(self.ctl), "cluster/status", schema.NAME])
                    for line in out.splitlines():
                        key, sep, value = line.partition(":")
                        if sep and key.strip() in ("Role", "Status", "Leader", "Term"):
                            info["cluster " + key.strip().lower()] = value.strip()
                except TapdbServerError as exc:
                    info["cluster"] = f"unavailable ({exc})"
        clock = _pid_of(self.clock_pidfile)
        info["session clock"] = f"running (pid {clock})" if clock else "stopped"
        if self.relay.pid():
            info.update(("relay " + k, v) for k, v in self.relay.status().items()
                        if k != "directory")
        return info

    def _is_clustered(self) -> bool:
        try:
            return _run(["ovsdb-tool", "db-is-clustered", str(self.db)]) is not None
        except TapdbServerError:
            return False


def check_chassis_remotes(chassis_remotes: Sequence[str]) -> None:
    for r in chassis_remotes:
        if not r.startswith("pssl:"):
            raise TapdbServerError(f"--chassis-remote: {r} is not allowed; agents' "
                                   "listeners are pssl:PORT[:ADDR] (their role is "
                                   "enforced on the certificate's CN)")


def _write_listeners(local_db: Path, chassis_remotes: Sequence[str]) -> None:
    """Make a local database name exactly these agents' listeners."""
    if not local_db.exists():
        _run(["ovsdb-tool", "create", str(local_db), str(schema.LOCAL_SCHEMA_PATH)])
    _run(["ovsdb-tool", "transact", str(local_db),
          json.dumps(schema.local_transaction(list(chassis_remotes)))])


def _pid_of(pidfile: Path) -> Optional[int]:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:  # killed and not yet reaped by its parent (init, once detached): gone all the same
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            return None
    except (OSError, IndexError):
        pass
    return pid


def _stop(pid_of, timeout: float) -> bool:
    """SIGTERM the process ``pid_of()`` names, SIGKILL after ``timeout``; False when none."""
    pid = pid_of()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_of() is None:
            return True
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    return True


def check_sources(sources: Sequence[str]) -> None:
    """A relay's sources: the members' operators' listeners or a member's unix socket."""
    if not sources:
        raise TapdbServerError("--relay-of: give the members' listeners, "
                               "ssl:IP:PORT[,ssl:IP:PORT...] (or unix:PATH of a member here)")
    for s in sources:
        if s.partition(":")[0] not in ("ssl", "tcp", "unix"):
            raise TapdbServerError(f"--relay-of: {s} is not allowed; give ssl:IP:PORT, "
                                   "tcp:IP:PORT or unix:PATH")


class TapdbRelay:
    """A relay in ``directory``: agents' listeners in front of the members.

    It keeps a copy of tapdb from its source (``ovsdb-server relay:``), sends
    each agent what it monitors, applies the agents' role to their writes and
    forwards those it permits, in its own name (its certificate of the tapdb
    CA, or a member's unix socket beside it).  It trusts chassis certificates
    on its listeners and, towards ``ssl:`` sources, members' certificates:
    ovsdb-server takes one CA file, so it gets both CAs in one bundle.
    """

    def __init__(self, directory: os.PathLike | str):
        self.dir = Path(directory).absolute()
        self.sock = self.dir / "relay.sock"
        self.ctl = self.dir / "relay.ctl"
        self.pidfile = self.dir / "relay.pid"
        self.log = self.dir / "relay.log"
        self.local_db = self.dir / "listeners.db"
        self.bundle = self.dir / "ca-bundle.pem"

    @property
    def remote(self) -> str:
        return f"unix:{self.sock}"

    def pid(self) -> Optional[int]:
        return _pid_of(self.pidfile)

    def start(self, source: str, chassis_remotes: Sequence[str], tls: Tls, chassis_ca: str,
              timeout: float = 30, settle: float = 5) -> list[str]:
        """Run the relay of ``source`` (comma-separated remotes) with these agents'
        listeners; what was done, for people.  It waits ``settle`` seconds at most for
        a copy of tapdb from its source, and succeeds without (a cold start): agents
        take another relay, or wait, while this one has none."""
        sources = [s.strip() for s in source.split(",") if s.strip()]
        check_sources(sources)
        check_chassis_remotes(chassis_remotes)
        if not chassis_remotes:
            raise TapdbServerError("--chassis-remote: a relay needs at least one agents' "
                                   "listener, pssl:PORT[:ADDR]")
        if self.pid() is not None:
            return [f"relay already running (pid {self.pid()})"]
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_listeners(self.local_db, chassis_remotes)
        try:
            cas = [Path(chassis_ca).read_text()]
            if any(s.startswith("ssl:") for s in sources):
                cas.append(Path(tls.ca_cert).read_text())
        except OSError as exc:
            raise TapdbServerError(f"cannot read a CA certificate: {exc.filename}: "
                                   f"{exc.strerror}") from exc
        self.bundle.write_text("".join(c if c.endswith("\n") else c + "\n" for c in cas))
        _run(["ovsdb-server", f"relay:{schema.NAME}:{','.join(sources)}", str(self.local_db),
              f"--remote=punix:{self.sock}",
              f"--remote=db:{schema.LOCAL_NAME},Local_Config,connections",
              f"--unixctl={self.ctl}", f"--pidfile={self.pidfile}", f"--log-file={self.log}",
              f"--private-key={tls.private_key}", f"--certificate={tls.certificate}",
              f"--ca-cert={self.bundle}", "--detach", "--no-chdir"], timeout)
        done = [f"started the relay of {','.join(sources)} (pid {self.pid()}) for agents on "
                + ", ".join(chassis_remotes)]
        if not self.serving(settle):
            done.append(f"the relay has no copy of tapdb yet (none within {settle:g} s): it "
                        "serves its agents once a source answers")
        return done

    def serving(self, timeout: float) -> bool:
        """Whether the relay holds a copy of tapdb to serve, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                _run(["ovsdb-client", "--timeout=2", "get-schema-version", self.remote,
                      schema.NAME], 3)
                return True
            except TapdbServerError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)

    def stop(self, timeout: float = 10) -> bool:
        return _stop(self.pid, timeout)

    def status(self) -> dict[str, str]:
        pid = self.pid()
        info = {"directory": str(self.dir), "state": "running" if pid else "stopped"}
        if pid:
            info["pid"] = str(pid)
            try:
                rows = _run(["ovsdb-client", "--timeout=5", "--format=json", "query",
                             self.remote, json.dumps(["_Server", {
                                 "op": "select", "table": "Database",
                                 "where": [["name", "==", schema.NAME]],
                                 "columns": ["connected"]}])])
                connected = json.loads(rows)[0]["rows"]
                info["source"] = ("connected" if connected and connected[0]["connected"]
                                  else "not connected")
            except (TapdbServerError, ValueError, LookupError) as exc:
                info["source"] = f"unavailable ({exc})"
        return info
