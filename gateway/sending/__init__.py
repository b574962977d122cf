"""The outbox's SMTP conversations in a worker process (``[outbound] send_workers``)."""
