"""sdnagent's options (oslo.config); ``oslo-config-generator`` writes the sample."""
from __future__ import annotations

import socket
from typing import Optional, Sequence

from oslo_config import cfg

from sdnagent import tls

DEFAULT_OPTS = [
    cfg.HostnameOpt("host", default=socket.gethostname(), sample_default="<hostname>",
                    help="This chassis's name in tapdb; tapctl's --nic and --vswitch name it."),
    cfg.FloatOpt("resync_interval", default=60.0, min=1.0,
                 help="Seconds between full reconciles when nothing happens (a safety net; "
                      "changes are applied as they arrive)."),
    cfg.FloatOpt("heartbeat_interval", default=10.0, min=1.0,
                 help="Seconds between updates of this chassis's heartbeat in tapdb."),
    cfg.BoolOpt("debug", default=False,
                help="Log the agent's debug messages (every pass, even those that change "
                     "nothing); the libraries it uses log at info level then. Same as "
                     "log_level = debug."),
    cfg.StrOpt("log_level", default="info", choices=["debug", "info", "warning", "error"],
               help="The least severe messages logged."),
    cfg.StrOpt("log_file",
               help="Log to this file (reopened when logrotate moves it). Unset: standard "
                    "error, which systemd hands to the journal; the agent then marks each "
                    "line with its priority for journald and leaves the time to it."),
]

OVS_OPTS = [
    cfg.StrOpt("ovsdb_connection", default="unix:/var/run/openvswitch/db.sock",
               help="The local Open_vSwitch database."),
    cfg.ListOpt("integration_bridges", default=["br-int"],
                help="Bridges whose VM ports can be sources (their flows are never touched)."),
    cfg.StrOpt("tap_bridge", default="brtap", help="The bridge the agent owns."),
    cfg.StrOpt("datapath_type", default="system", choices=["system", "netdev", "dummy"],
               help="Datapath type of the tap bridge: the same as the bridges around it."),
    cfg.HostAddressOpt("of_listen_address", default="127.0.0.1",
                       help="Where the embedded OpenFlow controller listens for the tap bridge."),
    cfg.PortOpt("of_listen_port", default=6655,
                help="Its TCP port (one agent per host; keep clear of other controllers)."),
    cfg.FloatOpt("of_request_timeout", default=10.0, min=0.1,
                 help="Seconds to wait for the switch to answer an OpenFlow request."),
]

TUNNEL_OPTS = [
    cfg.IPOpt("local_ip", required=True,
              help="This chassis's tunnel (underlay) address, IPv4 or IPv6, published in "
                   "tapdb."),
    cfg.IntOpt("mtu", min=68, max=65535,
               help="The underlay's MTU at this chassis (default: the MTU of the interface "
                    "that has local_ip). Sessions whose copies can exceed it once "
                    "encapsulated are marked with a warning naming the largest safe packet "
                    "length; published in tapdb for tapctl's warnings."),
    cfg.StrOpt("encap", default="vxlan", choices=["vxlan", "gre"],
               help="Encapsulation between chassis: vxlan on UDP port 4790, a datapath port "
                    "of its own, so that no other controller's GRE, Geneve or VXLAN (4789) "
                    "port takes or brings its traffic; gre only where no other port of the "
                    "host is GRE (one with a fixed remote address would take ours: the agent "
                    "then takes nothing from the tunnel and says so)."),
]

TAPDB_OPTS = [
    cfg.StrOpt("connection", default="unix:/var/lib/sdnagent/tapdb/tapdb.sock",
               help="tapdb: one remote, or every member of a Raft cluster comma-separated; "
                    "with TLS, the agents' listeners (sdnagent-tapdb --chassis-remote), "
                    "where this chassis may write only its own rows."),
    cfg.FloatOpt("timeout", default=10.0, min=0.1, help="Seconds to wait for tapdb."),
    cfg.StrOpt("ssl_key_file", help="For ssl: connections: this chassis's private key."),
    cfg.StrOpt("ssl_cert_file", help="For ssl: connections: its certificate (of the "
               "chassis CA), whose common name is this chassis's name ([DEFAULT] host)."),
    cfg.StrOpt("ssl_ca_cert_file", help="For ssl: connections: the CA that the "
               "certificates of tapdb's relays and members must chain to (the tapdb CA)."),
]


METRICS_OPTS = [
    cfg.FloatOpt("stats_interval", default=10.0, min=0.0,
                 help="Seconds between readings of the switch's counters (per session, "
                      "rule and source), published into tapdb where they changed; 0: never."),
    cfg.IPOpt("listen_address", default="127.0.0.1",
              help="Where the Prometheus endpoint listens."),
    cfg.PortOpt("listen_port",
                help="The Prometheus endpoint's port (http://ADDRESS:PORT/metrics); unset: "
                     "no endpoint."),
]


def list_opts() -> list:
    """For oslo-config-generator (namespace ``sdnagent``)."""
    return [(None, DEFAULT_OPTS), ("ovs", OVS_OPTS), ("tunnel", TUNNEL_OPTS),
            ("tapdb", TAPDB_OPTS), ("metrics", METRICS_OPTS)]


class ConfigError(ValueError):
    """A missing or invalid option; the text names it."""


def load(argv: Optional[Sequence[str]] = None) -> cfg.ConfigOpts:
    """Parse the command line and config files; every option is checked now, not when used."""
    conf = cfg.ConfigOpts()
    for group, opts in list_opts():
        conf.register_opts(opts, group=group)
    try:
        conf(list(argv) if argv is not None else None, project="sdnagent", prog="sdnagent")
        for group, opts in list_opts():
            section = conf if group is None else getattr(conf, group)
            for opt in opts:
                getattr(section, opt.dest)
        creds = tls.of(conf.tapdb.ssl_key_file, conf.tapdb.ssl_cert_file,
                       conf.tapdb.ssl_ca_cert_file,
                       "[tapdb] ssl_key_file, ssl_cert_file, ssl_ca_cert_file")
        if creds is not None:
            # a chassis certificate names the chassis: tapdb would refuse every row
            # this agent writes under another name
            tls.check(creds, ("[tapdb] ssl_key_file", "[tapdb] ssl_cert_file",
                              "[tapdb] ssl_ca_cert_file"), host=conf.host)
    except (cfg.Error, ValueError) as exc:
        raise ConfigError(str(exc).splitlines()[0]) from exc
    return conf
