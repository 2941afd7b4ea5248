"""Settings: parsing from the environment, every error at once, and the generated docs are current."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastingress.errors import ConfigError
from fastingress.settings import Settings, env_name, fields, render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.http_port == 8080 and settings.workers == 0 and settings.access_log is True


def test_values_are_converted_from_strings() -> None:
    settings = Settings.from_env({
        "FASTINGRESS_WORKERS": "3", "FASTINGRESS_DRAIN_TIMEOUT_S": "2.5", "FASTINGRESS_ACCESS_LOG": "false",
        "FASTINGRESS_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1", "FASTINGRESS_UNRELATED": "x",
    })
    assert settings.workers == 3 and settings.drain_timeout_s == 2.5 and settings.access_log is False
    assert settings.trusted_proxies == "10.0.0.0/8, 192.168.1.1"


@pytest.mark.parametrize("value", ["1", "true", "True"])
def test_booleans_accept_the_documented_spellings(value: str) -> None:
    assert Settings.from_env({"FASTINGRESS_ACCESS_LOG": value}).access_log is True


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FASTINGRESS_HTTP_PORT": "eighty", "FASTINGRESS_LOG_FORMAT": "xml",
                           "FASTINGRESS_DRAIN_TIMEOUT_S": "0", "FASTINGRESS_TRUSTED_PROXIES": "nope",
                           "FASTINGRESS_LB_ALGORITHM": "random", "FASTINGRESS_ADMIN_PORT": "70000"})
    text = str(info.value)
    for name in ("HTTP_PORT", "LOG_FORMAT", "DRAIN_TIMEOUT_S", "TRUSTED_PROXIES", "LB_ALGORITHM", "ADMIN_PORT"):
        assert f"FASTINGRESS_{name}" in text
    assert len(info.value.problems) == 6


def test_every_setting_has_a_description_and_a_unit_suffix_where_it_is_a_duration() -> None:
    for f in fields():
        assert f.description, f.name
        if f.type is float and f.name.startswith(("timeout_", "drain_")):
            assert f.name.endswith("_s"), f.name


def test_generated_configuration_doc_is_current() -> None:
    assert DOCS.read_text() == render_markdown(), "regenerate: python -m fastingress.settings > docs/configuration.md"
    for f in fields():
        assert f"`{env_name(f.name)}`" in DOCS.read_text()


def test_tls_settings_defaults_and_environment() -> None:
    default = Settings()
    assert (default.default_tls_secret, default.hsts, default.hsts_max_age_s, default.hsts_include_subdomains,
            default.tls_handshake_timeout_s, default.tls_keys_dir) == ("", True, 31536000, False, 10.0, "")
    settings = Settings.from_env({
        "FASTINGRESS_DEFAULT_TLS_SECRET": "ingress-system/wildcard.example.com", "FASTINGRESS_HSTS": "0",
        "FASTINGRESS_HSTS_MAX_AGE_S": "0", "FASTINGRESS_HSTS_INCLUDE_SUBDOMAINS": "true",
        "FASTINGRESS_TLS_HANDSHAKE_TIMEOUT_S": "2.5", "FASTINGRESS_TLS_KEYS_DIR": "/run/fastingress",
    })
    assert settings.default_tls_secret == "ingress-system/wildcard.example.com" and settings.hsts is False
    assert settings.hsts_max_age_s == 0 and settings.hsts_include_subdomains is True  # max-age=0 is meaningful
    assert settings.tls_handshake_timeout_s == 2.5 and settings.tls_keys_dir == "/run/fastingress"


@pytest.mark.parametrize("value", ["name-only", "/name", "ns/", "Ns/name", "ns/na_me", "a/b/c", "-ns/name",
                                   "ns/name-", f"{'n' * 64}/name", "ns/" + "a" * 254])
def test_default_tls_secret_must_be_namespace_slash_name(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FASTINGRESS_DEFAULT_TLS_SECRET": value})
    assert "FASTINGRESS_DEFAULT_TLS_SECRET" in str(info.value)


@pytest.mark.parametrize(("name", "value"), [("FASTINGRESS_HSTS_MAX_AGE_S", "-1"),
                                             ("FASTINGRESS_TLS_HANDSHAKE_TIMEOUT_S", "0"),
                                             ("FASTINGRESS_TLS_HANDSHAKE_TIMEOUT_S", "-1")])
def test_tls_durations_out_of_range(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert info.value.problems == [f"{name} must be {'>= 0' if 'HSTS' in name else '> 0'}"]
