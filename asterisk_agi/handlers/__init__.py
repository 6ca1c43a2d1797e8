"""AGI handlers, each registered under the script name Asterisk calls (``agi://host/NAME``).

The list is explicit: :func:`asterisk_agi.handlers.route.register` adds ``route``.
Nothing heavy is imported here (the classic script imports the route alone).
"""
