"""The AMI listener: a pure parser and correlator, the connection (panoramisk,
with its weaknesses covered), the sink that stores raw events and calls, and the
local spool that keeps events while the database is away."""
