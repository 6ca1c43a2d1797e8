"""Dashboard users: Argon2id passwords, three roles, account grants, and who may do what.

Roles: ``admin`` (every account, users, the audit log), ``manager`` (an agency's account
manager: the accounts granted, and adding members to those accounts), ``member`` (the accounts
granted: read, listen to recordings, qualify calls).  :func:`allowed` is the one place a
permission is decided; the dashboard asks it with a named action and an account.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from schema.models import Account, AuditEntry, User, UserAccount, WebSession, utcnow
from tracking.accounts import get_account
from tracking.errors import Conflict, InvalidInput, NotFound

ROLES = ("admin", "manager", "member")
#: what each role may do on an account it sees (admin: every account)
ACTIONS = {
    "admin": {"view", "listen", "qualify", "export", "manage_members", "audit", "users"},
    "manager": {"view", "listen", "qualify", "export", "manage_members"},
    "member": {"view", "listen", "qualify", "export"},
}
#: actions that are not about one account
GLOBAL_ACTIONS = {"audit", "users"}
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")


def _hasher() -> Any:
    from argon2 import PasswordHasher

    # argon2-cffi's defaults are RFC 9106's second recommendation: Argon2id, 64 MiB, t=3, p=4
    return PasswordHasher()


_HASHER: Any = None


def hasher() -> Any:
    global _HASHER  # one PasswordHasher (it is immutable); made on first use so the CLI starts fast
    if _HASHER is None:
        _HASHER = _hasher()
    return _HASHER


def hash_password(password: str) -> str:
    return str(hasher().hash(password))


#: verified against when the username is unknown, so an unknown user costs as long as a wrong password
_DUMMY: str | None = None


def verify_password(stored: str | None, password: str) -> bool:
    """True when *password* matches *stored* (an Argon2 hash); constant work when *stored* is None."""
    from argon2.exceptions import InvalidHashError, VerificationError

    global _DUMMY
    if stored is None:
        if _DUMMY is None:
            _DUMMY = hash_password(secrets.token_urlsafe(16))
        stored, password = _DUMMY, password + "\x00never"
    try:
        return bool(hasher().verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password too short ({len(password)} characters, at least {MIN_PASSWORD})")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"password too long (at most {MAX_PASSWORD} characters)")
    if password.strip() == "":
        raise InvalidInput("password must not be only spaces")
    return password


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def clean_username(name: str) -> str:
    text = (name or "").strip()
    if not _USERNAME.match(text):
        raise InvalidInput(
            f"username {name!r} is not allowed: 1 to 100 letters, digits and . _ @ + -, starting with a letter or digit"
        )
    return text


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(func.lower(User.username) == (username or "").strip().lower()))
    if user is None:
        raise NotFound(f"unknown user {username!r} (see `calltrack users list`)")
    return user


def add_user(
    session: Session,
    username: str,
    role: str,
    password: str | None = None,
    accounts: tuple[str, ...] = (),
    actor: str = "cli",
) -> tuple[User, str | None]:
    """A new user; returns it with the generated password when none was given (shown once)."""
    username = clean_username(username)
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if session.scalar(select(User.id).where(func.lower(User.username) == username.lower())) is not None:
        raise Conflict(f"user {username!r} already exists")
    generated = None
    if password is None:
        password = generated = generate_password()
    check_password(password)
    user = User(username=username, role=role, password_hash=hash_password(password), password_changed_at=utcnow())
    session.add(user)
    session.flush()
    for name in accounts:
        _grant(session, user, get_account(session, name))
    session.add(
        AuditEntry(actor=actor, action="user.add", target=username, detail={"role": role, "accounts": list(accounts)})
    )
    return user, generated


def _grant(session: Session, user: User, account: Account) -> bool:
    exists = session.get(UserAccount, (user.id, account.id))
    if exists is not None:
        return False
    session.add(UserAccount(user_id=user.id, account_id=account.id))
    session.flush()
    return True


def grant(session: Session, username: str, account: str, actor: str = "cli") -> bool:
    user = get_user(session, username)
    acc = get_account(session, account)
    if user.role == "admin":
        raise InvalidInput(f"{user.username} is an administrator and sees every account already")
    added = _grant(session, user, acc)
    if added:
        session.add(AuditEntry(actor=actor, action="user.grant", target=user.username, detail={"account": acc.name}))
    return added


def revoke(session: Session, username: str, account: str, actor: str = "cli") -> bool:
    user = get_user(session, username)
    acc = get_account(session, account)
    result = session.execute(
        delete(UserAccount).where(UserAccount.user_id == user.id, UserAccount.account_id == acc.id)
    )
    gone = int(getattr(result, "rowcount", 0) or 0)
    if gone:
        session.add(AuditEntry(actor=actor, action="user.revoke", target=user.username, detail={"account": acc.name}))
    return bool(gone)


def end_sessions(session: Session, user_id: int) -> int:
    result = session.execute(delete(WebSession).where(WebSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


def set_disabled(session: Session, username: str, disabled: bool, actor: str = "cli") -> User:
    user = get_user(session, username)
    user.disabled = disabled
    if disabled:
        end_sessions(session, user.id)
    session.add(AuditEntry(actor=actor, action="user.disable" if disabled else "user.enable", target=user.username))
    return user


def set_password(session: Session, user: User, password: str | None, actor: str) -> str | None:
    """A new password (generated when None: returned); every session of the user ends."""
    generated = None
    if password is None:
        password = generated = generate_password()
    check_password(password)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    end_sessions(session, user.id)
    session.add(AuditEntry(actor=actor, action="user.password", target=user.username))
    return generated


def list_users(session: Session) -> list[dict[str, Any]]:
    names = {
        uid: sorted(n)
        for uid, n in _group(
            session.execute(
                select(UserAccount.user_id, Account.name).join(Account, Account.id == UserAccount.account_id)
            ).all()
        ).items()
    }
    rows = []
    for user in session.scalars(select(User).order_by(User.username)):
        rows.append(
            {
                "username": user.username,
                "role": user.role,
                "accounts": "*" if user.role == "admin" else ", ".join(names.get(user.id, [])),
                "disabled": user.disabled,
                "created_at": user.created_at.isoformat(timespec="seconds") if user.created_at else None,
            }
        )
    return rows


def _group(pairs: Any) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for uid, name in pairs:
        out.setdefault(uid, []).append(name)
    return out


# --- who may do what ---------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The signed-in user as the dashboard's permission checks see them."""

    user_id: int
    username: str
    role: str
    #: the accounts they may see; None for an administrator (every account)
    account_ids: frozenset[int] | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, account_id: int | None) -> bool:
        if self.account_ids is None:
            return True
        return account_id is not None and account_id in self.account_ids


def viewer(session: Session, user: User) -> Viewer:
    if user.role == "admin":
        ids = None
    else:
        ids = frozenset(session.scalars(select(UserAccount.account_id).where(UserAccount.user_id == user.id)))
    return Viewer(user.id, user.username, user.role, ids)


def allowed(who: Viewer, action: str, account_id: int | None = None) -> bool:
    """The one permission check: may *who* do *action* (on *account_id*)?"""
    if action not in ACTIONS.get(who.role, set()):
        return False
    if action in GLOBAL_ACTIONS:
        return who.is_admin
    return who.sees(account_id)


def visible_accounts(session: Session, who: Viewer) -> list[Account]:
    query = select(Account).order_by(Account.name)
    if who.account_ids is not None:
        query = query.where(Account.id.in_(who.account_ids or [-1]))
    return list(session.scalars(query))


def add_member(session: Session, who: Viewer, username: str, account_id: int) -> tuple[User, str | None]:
    """A manager (or an administrator) adds a member to an account they manage, or grants an existing member."""
    if not allowed(who, "manage_members", account_id):
        raise NotFound("no such account")
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound("no such account")
    existing = session.scalar(select(User).where(func.lower(User.username) == username.strip().lower()))
    if existing is not None:
        if existing.role != "member":
            raise Conflict(f"{existing.username} is a {existing.role}; only members are added to an account here")
        _grant(session, existing, account)
        session.add(
            AuditEntry(
                actor=who.username, action="user.grant", target=existing.username, detail={"account": account.name}
            )
        )
        return existing, None
    return add_user(session, username, "member", None, (account.name,), actor=who.username)


def session_expired(
    created_at: dt.datetime, last_seen_at: dt.datetime, now: dt.datetime, idle: dt.timedelta, absolute: dt.timedelta
) -> bool:
    return now - last_seen_at >= idle or now - created_at >= absolute
