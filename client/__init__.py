"""Clients of duplex: the remote session (benchmark, local assistant) and the browser page."""
