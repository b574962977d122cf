"""Operator jobs: backups, reports, GDPR and retention, import, status view, leases."""
