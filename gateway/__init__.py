"""Daemon wiring, CLI, intakes: the only package that knows sockets, signals and the loop."""
