"""Durable state: SQL rows through SQLAlchemy Core, blobs on disk."""
