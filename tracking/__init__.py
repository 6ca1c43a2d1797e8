"""The domain, without sockets: numbers, sources, pools and leases, attribution,
routing policy, caller enrichment, privacy and reports.

Functions here take an open SQLAlchemy session (opened at the edges: one per CLI
command, AGI request or web request) and the frozen settings they need.
"""
