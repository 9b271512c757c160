"""Settings: defaults < YAML file < SLM_GATEWAY_* environment < flags, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    config = write(tmp_path, "port: 9000\nupstream: {url: http://file.example/v1, client: httpx}\ncache: {ttl_seconds: 5}\n")
    env = {"SLM_GATEWAY_PORT": "9100", "SLM_GATEWAY_UPSTREAM_CLIENT": "aiohttp", "SLM_GATEWAY_LOCAL_THREADS": "3"}
    settings = load_settings(config, environ=env, overrides={"port": 9200})
    assert settings.port == 9200  # flag over env over file
    assert settings.upstream.client == "aiohttp"  # env over file
    assert settings.upstream.url == "http://file.example/v1" and settings.cache.ttl_seconds == 5  # file over defaults
    assert settings.local.threads == 3
    assert load_settings(None, environ={}).port == 8080


def test_the_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path, "api_keys: [sk-a]\n")
    assert load_settings(None, environ={"SLM_GATEWAY_CONFIG": str(config)}).api_keys == ["sk-a"]
    assert load_settings(None, environ={"SLM_GATEWAY_API_KEYS": "sk-x, sk-y"}).api_keys == ["sk-x", "sk-y"]


@pytest.mark.parametrize(
    ("config", "env", "needle"),
    [
        ("upstream: {client: curl}\n", {}, "upstream.client"),
        ("", {"SLM_GATEWAY_UPSTREAM_CLIENT": "curl"}, "upstream.client"),
        ("cache: {ttl_secondz: 5}\n", {}, "ttl_secondz"),
        ("port: [1]\n", {}, "port"),
        ("- a list\n", {}, "mapping"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(tmp_path: Path, config: str, env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(write(tmp_path, config), environ=env)
    message = str(caught.value)
    assert needle in message and "\n" not in message


def test_admin_keys_and_the_memory_cache_byte_bound_come_from_the_environment() -> None:
    env = {"SLM_GATEWAY_ADMIN_API_KEYS": "sk-ops-1, sk-ops-2", "SLM_GATEWAY_CACHE_MAX_MEMORY_BYTES": "5000"}
    settings = load_settings(None, environ=env)
    assert (settings.admin_api_keys, settings.cache.max_memory_bytes) == (["sk-ops-1", "sk-ops-2"], 5000)
    assert load_settings(None, environ={}).cache.max_memory_bytes == 64 * 1024 * 1024
    with pytest.raises(SettingsError, match="^admin_api_keys must differ from api_keys$"):
        load_settings(None, environ={"SLM_GATEWAY_API_KEYS": "sk-a", "SLM_GATEWAY_ADMIN_API_KEYS": "sk-a"})
    with pytest.raises(SettingsError, match="^cache.max_memory_bytes must be at least 1, got 0$"):
        load_settings(None, environ={"SLM_GATEWAY_CACHE_MAX_MEMORY_BYTES": "0"})
