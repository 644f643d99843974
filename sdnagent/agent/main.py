"""sdnagent --config-file FILE: the per-hypervisor daemon."""
from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import signal
import sys
from typing import Optional, Sequence

from sdnagent.agent import config


class JournalFormatter(logging.Formatter):
    """For standard error read by journald: each line starts with its syslog priority
    (``<3>`` error ... ``<7>`` debug, sd-daemon(3)), and journald keeps the time."""

    PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def log_handler(log_file: Optional[str]) -> logging.Handler:
    """Where the log goes: a file (reopened when logrotate moves it), else standard error,
    marked for journald when systemd connected it to the journal ($JOURNAL_STREAM)."""
    if log_file:
        handler: logging.Handler = logging.handlers.WatchedFileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
        if os.environ.get("JOURNAL_STREAM"):
            handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
            return handler
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        conf = config.load(argv)
    except config.ConfigError as exc:
        print(f"sdnagent: configuration error: {exc}", file=sys.stderr)
        return 2
    debug = conf.debug or conf.log_level == "debug"
    try:
        handler = log_handler(conf.log_file)
    except OSError as exc:
        print(f"sdnagent: configuration error: log_file: cannot open {conf.log_file}: "
              f"{exc.strerror}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if debug else getattr(logging, conf.log_level.upper()),
                        handlers=[handler])
    # the libraries log every message they pass at debug level: info is their most;
    # their warnings are the operator's
    for noisy in ("os_ken", "ovsdbapp", "ofp_event"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
    from sdnagent.agent.agent import Agent  # after logging: os-ken logs at import

    agent = Agent(conf)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack to the log
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    log = logging.getLogger("sdnagent")
    log.info("sdnagent starting: chassis %s, tunnel %s (%s), tapdb %s, switch %s",
             conf.host, conf.tunnel.local_ip, conf.tunnel.encap, conf.tapdb.connection,
             conf.ovs.ovsdb_connection)
    code = 0
    try:
        agent.start()
        agent.run()
    except SystemExit:
        pass
    except Exception:
        log.exception("sdnagent failed")
        code = 1
    log.info("sdnagent stopped")
    logging.shutdown()
    # os-ken's listener threads are not daemon threads and cannot be joined
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
