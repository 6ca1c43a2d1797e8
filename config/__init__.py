"""Typed, frozen settings for every calltrack component, loaded from TOML.

Only the standard library is used here so that every other package (and the
classic AGI script, which must start fast) can import it cheaply.
"""

from __future__ import annotations

from config.settings import (
    AgiSettings,
    AmiServer,
    AmiSettings,
    AsteriskSettings,
    ConfigError,
    DashboardSettings,
    DatabaseSettings,
    GeneralSettings,
    LookupSettings,
    NumberSettings,
    PrivacySettings,
    RecorderSettings,
    Settings,
    SmsSettings,
    SpamSettings,
    TrackingSettings,
    TranscriptionSettings,
    WebhookSettings,
    WebSettings,
    agi_system_names,
    load_settings,
    system_name_problem,
)

__all__ = [
    "AgiSettings",
    "AmiServer",
    "AmiSettings",
    "AsteriskSettings",
    "DashboardSettings",
    "ConfigError",
    "DatabaseSettings",
    "GeneralSettings",
    "LookupSettings",
    "NumberSettings",
    "PrivacySettings",
    "SpamSettings",
    "TranscriptionSettings",
    "WebhookSettings",
    "RecorderSettings",
    "Settings",
    "SmsSettings",
    "TrackingSettings",
    "WebSettings",
    "agi_system_names",
    "load_settings",
    "system_name_problem",
]
