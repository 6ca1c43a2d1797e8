"""`calltrack users`: add (first administrator, generated password), list, grant, revoke, disable, reset-password."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from schema.models import AuditEntry, User, WebSession
from tests.conftest import Cli
from tracking.users import verify_password


def _user(cli: Cli, name: str) -> User:
    with Session(create_engine(cli.database_url)) as s:
        user = s.scalars(select(User).where(User.username == name)).one()
        s.expunge(user)
        return user


def test_first_admin_gets_a_generated_password_printed_once(cli: Cli) -> None:
    result = cli.ok("users", "add", "root", "--admin")
    assert "added admin 'root'" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("password: ")]
    assert len(lines) == 1
    password = lines[0].removeprefix("password: ")
    assert len(password) >= 16
    user = _user(cli, "root")
    assert user.password_hash.startswith("$argon2id$") and password not in user.password_hash
    assert verify_password(user.password_hash, password) and not verify_password(user.password_hash, password + "x")
    listed = json.loads(cli.ok("users", "list", "--format", "json").output)
    assert listed == [
        {"username": "root", "role": "admin", "accounts": "*", "disabled": False, "created_at": listed[0]["created_at"]}
    ]
    assert password not in cli.ok("users", "list").output


def test_typed_password_is_checked_and_never_printed(cli: Cli) -> None:
    cli.ok("accounts", "add", "Acme")
    short = cli.fails("users", "add", "mia", "--account", "Acme", "--password", input="short\nshort\n")
    assert "too short" in short.output
    result = cli.ok(
        "users", "add", "mia", "--account", "Acme", "--password", input="a long password\na long password\n"
    )
    assert "password: " not in result.output.replace("Password: ", "")
    assert verify_password(_user(cli, "mia").password_hash, "a long password")


def test_grant_revoke_and_roles(make_account: object, cli: Cli) -> None:
    cli.ok("accounts", "add", "Acme")
    cli.ok("accounts", "add", "Globex")
    cli.ok("users", "add", "ann", "--manager", "--account", "Acme")
    assert "granted 'Globex'" in cli.ok("users", "grant", "ann", "--account", "Globex").output
    assert "already sees" in cli.ok("users", "grant", "ann", "--account", "Globex").output
    rows = json.loads(cli.ok("users", "list", "--format", "json").output)
    assert rows[0]["role"] == "manager" and rows[0]["accounts"] == "Acme, Globex"
    assert "revoked 'Acme'" in cli.ok("users", "revoke", "ann", "--account", "Acme").output
    assert json.loads(cli.ok("users", "list", "--format", "json").output)[0]["accounts"] == "Globex"
    assert "unknown account" in cli.fails("users", "grant", "ann", "--account", "Nope").output
    assert "unknown user" in cli.fails("users", "grant", "bob", "--account", "Acme").output
    cli.ok("users", "add", "root", "--admin")
    assert "sees every account" in cli.fails("users", "grant", "root", "--account", "Acme").output


def test_bad_usernames_and_duplicates_are_refused(cli: Cli) -> None:
    for bad in ("", " ", "a b", "<script>", "x" * 101, ".dot"):
        assert "not allowed" in cli.fails("users", "add", bad).output
    cli.ok("users", "add", "mia")
    assert "already exists" in cli.fails("users", "add", "MIA").output


def test_disable_ends_sessions_and_reset_password(cli: Cli) -> None:
    cli.ok("users", "add", "mia")
    engine = create_engine(cli.database_url)
    with Session(engine) as s, s.begin():
        user = s.scalars(select(User)).one()
        s.add(WebSession(token_hash="h" * 64, user_id=user.id, csrf="c"))
    assert "disabled 'mia'" in cli.ok("users", "disable", "mia").output
    assert _user(cli, "mia").disabled
    with Session(engine) as s:
        assert s.scalars(select(WebSession)).all() == []
    cli.ok("users", "disable", "mia", "--enable")
    assert not _user(cli, "mia").disabled
    old = _user(cli, "mia").password_hash
    result = cli.ok("users", "reset-password", "mia")
    new_password = result.output.split("password: ")[-1].strip()
    user = _user(cli, "mia")
    assert user.password_hash != old and verify_password(user.password_hash, new_password)
    with Session(engine) as s:
        actions = s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["user.add", "user.disable", "user.enable", "user.password"]
    engine.dispose()
