"""The ``gateway`` command: argument parsing and dispatch; each command prints one line on error."""
