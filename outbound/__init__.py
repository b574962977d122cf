"""Mail the gateway sends: composed here, queued in the outbox, delivered by a worker."""
