"""``POST /dni/v1/form``: a website form submission from dni.js, checked like the session API.

The body is ``{"account": KEY, "session": ID or null, "url": page, "form": name or null,
"fields": {name: value}, "dnt": false}``; each problem is a 400 naming its field.
Storing (and the site's opt-in) is ``tracking.form_leads``.
"""

from __future__ import annotations

import re
from typing import Any

from tracking.form_leads import MAX_FIELDS, MAX_NAME, MAX_VALUE
from web.api import _KEY, BadRequest, _account, _only, _page_url, _string

#: control characters other than tab and line breaks (a textarea's value has those)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def form_request(data: dict[str, Any]) -> dict[str, Any]:
    _only(data, ("account", "session", "url", "form", "fields", "dnt"))
    account = _account(data)
    session = _string(data, "session", required=False)
    if session is not None and not _KEY.match(session):
        raise BadRequest(400, "session", "session must be null or the id the session answer gave")
    url = _page_url(_string(data, "url", required=True) or "", "url")
    form = _string(data, "form", required=False)
    if form is not None and len(form) > 200:
        raise BadRequest(400, "form", "form is too long (at most 200 characters)")
    fields = data.get("fields")
    if not isinstance(fields, dict):
        raise BadRequest(400, "fields", "fields must be an object of field names and values")
    if len(fields) > MAX_FIELDS:
        raise BadRequest(400, "fields", f"too many fields ({len(fields)}, at most {MAX_FIELDS})")
    clean: dict[str, str] = {}
    for name, value in fields.items():
        if not name or len(name) > MAX_NAME or _CONTROL.search(name) or "\n" in name:
            raise BadRequest(400, "fields", f"field name {name[:40]!r} must be 1 to {MAX_NAME} printable characters")
        if not isinstance(value, str):
            raise BadRequest(400, "fields", f"field {name[:40]!r} must be a string")
        if len(value) > MAX_VALUE:
            raise BadRequest(400, "fields", f"field {name[:40]!r} is too long (at most {MAX_VALUE} characters)")
        if _CONTROL.search(value):
            raise BadRequest(400, "fields", f"field {name[:40]!r} must not contain control characters")
        clean[name] = value
    dnt = data.get("dnt", False)
    if not isinstance(dnt, bool):
        raise BadRequest(400, "dnt", "dnt must be true or false")
    return {"account": account, "session": session, "url": url, "form": form, "fields": clean, "dnt": dnt}
