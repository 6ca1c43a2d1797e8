"""Caller lookups from a third-party provider over HTTPS, and the service that runs them."""
