"""Outbound delivery of outbox events to webhook endpoints: signing, the HTTP client, retries, the SSRF guard."""
