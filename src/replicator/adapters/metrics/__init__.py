"""Observers of a running pipeline: the Prometheus endpoint."""
