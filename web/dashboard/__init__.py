"""The web dashboard: sign-in, calls, call detail with recording, reports, live calls.

Mounted by ``web.app`` under ``/dashboard``.  Each page's data is one function of
(signed-in user, filters) in ``queries``, permission-checked through
``tracking.users.allowed``, and rendered as HTML, JSON (``.json``) and CSV (``.csv``).
"""
