"""Settings: search order, strict types, one-line errors, environment overrides, the sample file."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from config import ConfigError, Settings, agi_system_names, load_settings, system_name_problem
from config.settings import section_types

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "samples" / "calltrack.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if Path("/etc/calltrack/calltrack.toml").exists():
        pytest.skip("this machine has /etc/calltrack/calltrack.toml, which the search order would read")
    settings = load_settings(environ={})
    assert settings.source == "<defaults>"
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("calltrack/calltrack.sqlite3")
    assert settings.numbers.default_region == "US"


def test_search_order_explicit_then_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "calltrack.toml", '[general]\nsystem_name = "from-cwd"\n')
    env_file = write(tmp_path / "env.toml", '[general]\nsystem_name = "from-env"\n')
    explicit = write(tmp_path / "explicit.toml", '[general]\nsystem_name = "from-option"\n')
    assert load_settings(environ={}).general.system_name == "from-cwd"
    assert load_settings(environ={"CALLTRACK_CONFIG": str(env_file)}).general.system_name == "from-env"
    chosen = load_settings(explicit, environ={"CALLTRACK_CONFIG": str(env_file)})
    assert chosen.general.system_name == "from-option"
    assert chosen.source == str(explicit)


def test_environment_overrides_database_and_secret(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", '[database]\nurl = "sqlite:///from-file.db"\n[web]\nsecret_key = "file"\n')
    env = {"CALLTRACK_DATABASE_URL": "postgresql://db.example/ct", "CALLTRACK_WEB_SECRET_KEY": "s3cret"}
    settings = load_settings(cfg, environ=env)
    assert settings.database_url == "postgresql://db.example/ct"
    assert settings.web.secret_key == "s3cret"


def test_data_dir_decides_embedded_database(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", f'[general]\ndata_dir = "{tmp_path / "state"}"\n')
    settings = load_settings(cfg, environ={})
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'calltrack.sqlite3'}"
    assert settings.archive_dir == tmp_path / "state" / "recordings"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[general]\nsytem_name = 'x'\n", "general.sytem_name", "unknown key"),
        ("[nope]\nx = 1\n", "nope", "unknown key"),
        ("[agi]\ndb_deadline_ms = 'fast'\n", "agi.db_deadline_ms", "must be an integer"),
        ("[agi]\ndb_deadline_ms = true\n", "agi.db_deadline_ms", "must be an integer"),
        ("[recorder]\nkeep_source = 'yes'\n", "recorder.keep_source", "must be true or false"),
        ("[agi]\nallowed_hosts = '127.0.0.1'\n", "agi.allowed_hosts", "must be an array of strings"),
        ("[agi]\nallowed_hosts = [1]\n", "agi.allowed_hosts[0]", "must be a string"),
        ("general = 3\n", "general", "must be a table"),
        ("[recorder]\nformat = 'wav'\n", "recorder.format", "mp3, opus or flac"),
        ("[numbers]\ndefault_region = 'XX'\n", "numbers.default_region", "unknown region"),
        ("[agi]\nlisten = '4573'\n", "agi.listen", "HOST:PORT"),
        ("[[ami.servers]]\nname = 'a'\n[[ami.servers]]\nname = 'a'\n", "ami.servers", "unique"),
        ("[[ami.servers]]\nport = 'x'\n", "ami.servers[0].port", "must be an integer"),
        ("[[ami.servers]]\nhostname = 'x'\n", "ami.servers[0].hostname", "unknown key"),
        ("[spam]\nshort_call_seconds = -1\n", "spam.short_call_seconds", "must be 0 (off) or a number of seconds"),
        ("[spam]\nshort_call_seconds = 'ten'\n", "spam.short_call_seconds", "must be a number"),
        ("[spam]\nburst_numbers = 1\n", "spam.burst_numbers", "at least 2"),
        ("[spam]\nburst_numbers = 2.5\n", "spam.burst_numbers", "must be an integer"),
        ("[spam]\nburst_minutes = 0\n", "spam.burst_minutes", "must be a positive number"),
        ("[spam]\nburst_window = 5\n", "spam.burst_window", "unknown key"),
    ],
)
def test_bad_settings_name_file_and_key_in_one_line(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    cfg = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    message = str(info.value)
    assert message.startswith(f"{cfg}: {key}: ")
    assert fragment in message
    assert "\n" not in message


def test_unreadable_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: no such file"):
        load_settings(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path / "broken.toml", "[general\n"), environ={})
    with pytest.raises(ConfigError, match="is a folder"):
        load_settings(tmp_path, environ={})


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root here, which reads any file; the OS refusal is simulated at open().
    cfg = write(tmp_path / "locked.toml", "")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("config.settings.open", refuse, raising=False)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert str(info.value) == f"{cfg}: permission denied: the file is not readable"


def test_ami_servers_are_typed_tables(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.toml",
        '[[ami.servers]]\nname = "pbx1"\nhost = "10.0.0.5"\nport = 5039\ntls = true\nsecret_file = "/etc/s"\n'
        '[[ami.servers]]\nname = "pbx2"\n',
    )
    servers = load_settings(cfg, environ={}).ami.servers
    assert [(s.name, s.host, s.port, s.tls) for s in servers] == [
        ("pbx1", "10.0.0.5", 5039, True),
        ("pbx2", "127.0.0.1", 5038, False),
    ]


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.general.system_name = "x"  # type: ignore[misc]


def test_sample_file_loads_and_documents_every_key() -> None:
    settings = load_settings(SAMPLE, environ={})
    defaults = Settings()
    text = SAMPLE.read_text(encoding="utf-8")
    tables = re.split(r"^#?\s*\[+([a-z_.]+)\]+\s*$", text, flags=re.M)
    by_table: dict[str, str] = {}
    for name, body in zip(tables[1::2], tables[2::2], strict=True):
        by_table[name] = by_table.get(name, "") + body
    missing = []
    for section, cls in section_types().items():
        body = by_table.get(section, "")
        for field in dataclasses.fields(cls):
            if (section, field.name) == ("ami", "servers"):
                continue  # an array of tables, documented as [[ami.servers]] below
            if not re.search(rf"^#?\s*{field.name}\s*=", body, flags=re.M):
                missing.append(f"{section}.{field.name}")
        # what the sample sets is the default (the sample documents defaults)
        for field in dataclasses.fields(cls):
            if field.name == "data_dir":
                continue
            assert getattr(getattr(settings, section), field.name) == getattr(getattr(defaults, section), field.name), (
                f"{section}.{field.name} in the sample differs from the default"
            )
    server_fields = {
        f.name for f in dataclasses.fields(typing.get_type_hints(type(defaults.ami))["servers"].__args__[0])
    }
    for name in server_fields:
        if not re.search(rf"^#\s*{name}\s*=", by_table.get("ami.servers", ""), flags=re.M):
            missing.append(f"ami.servers.{name}")
    assert not missing, f"keys missing from config/samples/calltrack.toml: {missing}"


def test_region_list_matches_phonenumbers() -> None:
    import phonenumbers

    from config.regions import REGIONS

    # Every region settings accept is one phonenumbers reads (a newer phonenumbers may add regions).
    assert set(phonenumbers.SUPPORTED_REGIONS) >= REGIONS
    assert len(REGIONS) >= 240


def test_loading_settings_needs_only_the_standard_library(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from config import load_settings; load_settings(environ={}); "
        "third = sorted(m for m in ('phonenumbers', 'sqlalchemy', 'click') if m in sys.modules); print(third)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "[]"


def test_one_ami_server_names_the_system_when_system_name_is_not_set(tmp_path: Path) -> None:
    # README's own example: [[ami.servers]] name = "pbx1" and no [general] system_name. The AGI route
    # then keyed calls "asterisk" and the listener "pbx1": every call was stored twice.
    readme = write(tmp_path / "readme.toml", '[[ami.servers]]\nname = "pbx1"\nusername = "calltrack"\n')
    settings = load_settings(readme, environ={})
    assert settings.general.system_name == "pbx1"
    assert system_name_problem(settings) is None
    # an explicit name is kept (file or environment), and the mismatch is one clear line
    explicit = write(
        tmp_path / "explicit.toml", '[general]\nsystem_name = "asterisk"\n[[ami.servers]]\nname = "pbx1"\n'
    )
    for settings in (
        load_settings(explicit, environ={}),
        load_settings(readme, environ={"CALLTRACK_SYSTEM_NAME": "x"}),
    ):
        problem = system_name_problem(settings)
        assert problem is not None and "\n" not in problem
        assert "ami.servers[0].name: 'pbx1' is not a system name the AGI route uses" in problem
        assert "stored twice" in problem and "set general.system_name = 'pbx1'" in problem
    # several servers: each must be general.system_name or a peer_systems name
    many = write(
        tmp_path / "many.toml",
        '[general]\nsystem_name = "pbx1"\n[agi]\npeer_systems = ["10.0.0.6=pbx2"]\n'
        '[[ami.servers]]\nname = "pbx1"\n[[ami.servers]]\nname = "pbx2"\n[[ami.servers]]\nname = "pbx3"\n',
    )
    settings = load_settings(many, environ={})
    assert agi_system_names(settings) == ["pbx1", "pbx2"]
    assert "ami.servers[2].name: 'pbx3'" in (system_name_problem(settings) or "")
    # no AMI server at all: nothing to disagree with
    assert system_name_problem(Settings()) is None
