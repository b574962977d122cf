"""Durable state: SQL rows through SQLAlchemy Core, blobs as rows (the default) or files."""
