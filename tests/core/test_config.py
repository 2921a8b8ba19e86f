"""Settings read from the environment, and a bad allow-list refused at start."""

from __future__ import annotations

import ipaddress

import pytest

from core.config import Settings


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_IDS", "fal-ai/live-portrait/image, me/other")
    monkeypatch.setenv("ALLOWED_PRIVATE_NETWORKS", "127.0.0.0/8,::1/128")
    monkeypatch.setenv("TORCH_THREADS", "")
    monkeypatch.setenv("TASK_SOFT_TIME_LIMIT_S", "60")
    monkeypatch.setenv("TASK_TIME_LIMIT_S", "100")
    settings = Settings()
    assert settings.app_id_list == ["fal-ai/live-portrait/image", "me/other"]
    assert ipaddress.ip_address("127.0.0.5") in settings.allowed_networks[0]
    assert settings.torch_threads is None
    assert settings.visibility_timeout_s > settings.task_time_limit_s


def test_settings_refuse_bad_cidr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_PRIVATE_NETWORKS", "not-a-network")
    with pytest.raises(ValueError):
        Settings()
