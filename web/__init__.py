"""The web service: the dni.js script and its session API, the dashboard, auth."""
