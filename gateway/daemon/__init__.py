"""``gateway run``: the daemon that builds the services from the config and keeps them alive.

SIGTERM/SIGINT stop accepting, let messages in flight finish (their senders
get a real answer, not a dropped connection) and exit 0. SIGHUP, or saving the
config file, re-reads the config; an invalid file is refused and the running
config stays. A service that must not die dying stops the daemon the same
clean way with exit 70 (``supervisor.py`` says which and why).

- ``run``: the ``Daemon`` (start, reload, snapshot) and the order its parts are
  opened and closed in;
- ``supervisor``: the services in one TaskGroup, restarted or fatal when they die;
- ``files``: the status file it writes and the config file it watches;
- ``ready``: the one line it prints once it is up.
"""

from gateway.daemon.run import Daemon, run_daemon

__all__ = ["Daemon", "run_daemon"]
