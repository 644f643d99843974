"""sdnagent --config-file FILE: the per-hypervisor daemon."""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from typing import Optional, Sequence

from sdnagent.agent import config


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        conf = config.load(argv)
    except config.ConfigError as exc:
        print(f"sdnagent: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if conf.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the libraries log every message they pass at debug level: info is their most;
    # their warnings are the operator's
    for noisy in ("os_ken", "ovsdbapp", "ofp_event"):
        logging.getLogger(noisy).setLevel(logging.INFO if conf.debug else logging.WARNING)
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
