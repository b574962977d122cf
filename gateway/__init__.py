"""The running gateway: the only package that knows sockets, signals and the loop.

Its rooms, each importing only the rooms below it (``make lint`` holds this):

- ``cli/``: the ``gateway`` command, one error type and one printer of it;
- ``daemon``: wires the services and keeps them alive;
- ``web/`` | ``ops/``: the HTTP side (status, client pages) | the operator's jobs
  (backups, reports, GDPR, import, status view), neither using the other;
- ``services``: the store, the scanner and the pipeline, opened together;
- ``intake/``: the mail path (SMTP, IMAP, pipe) from bytes to a committed message and
  the answer the sender gets;
- ``sending/``: the outbox's SMTP conversations in a worker process;
- ``clock``, ``logs``, ``metrics``, ``loop``, ``workers``: read by every room above (``workers``:
  the worker processes' start, frames, replacement, stop; ``worker_io`` their side).
"""
