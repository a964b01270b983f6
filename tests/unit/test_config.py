"""Settings: env overrides in nested form, TOML files, clear errors, secrets kept out of logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayml.config import load_settings
from rayml.errors import ConfigError


def test_defaults_name_the_documented_topics() -> None:
    topics = load_settings().topics
    assert (
        topics.input,
        topics.output,
        topics.jobs,
        topics.dlq,
        topics.models,
        topics.registry,
    ) == (
        "ml.pipeline.input",
        "ml.pipeline.output",
        "ml.pipeline.jobs",
        "ml.pipeline.dlq",
        "ml.models",
        "ml.pipeline.registry",
    )


def test_nested_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYML_KAFKA__BOOTSTRAP_SERVERS", "b1:9092, b2:9093")
    monkeypatch.setenv("RAYML_TOPICS__INPUT", "my.input")
    monkeypatch.setenv("RAYML_EXECUTOR__MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("RAYML_RAY__ADDRESS", "10.0.0.1:6379")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "b1:9092,b2:9093"
    assert settings.topics.input == "my.input"
    assert settings.executor.max_batch_size == 64
    assert settings.ray.address == "10.0.0.1:6379"


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("RAYML_KAFKA__BOOTSTRAP_SERVERS", "no-port", "kafka.bootstrap_servers"),
        ("RAYML_EXECUTOR__MAX_BATCH_SIZE", "0", "executor.max_batch_size"),
        ("RAYML_TOPICS__DLQ", "bad topic!", "topics.dlq"),
        ("RAYML_KAFKA__SECURITY_PROTOCOL", "TLS", "kafka.security_protocol"),
        ("RAYML_EXECUTOR__DELIVERY", "maybe", "executor.delivery"),
    ],
)
def test_bad_value_names_the_field(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings()


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "rayml.toml"
    config.write_text('[kafka]\nbootstrap_servers = "k:9092"\nbootstrap = "typo"\n')
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap"):
        load_settings(config)


def test_toml_file_is_below_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "rayml.toml"
    config.write_text('[kafka]\nbootstrap_servers = "file:9092"\n[topics]\noutput = "f.out"\n')
    monkeypatch.setenv("RAYML_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.topics.output == "f.out"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_security_settings_pass_through_and_secrets_stay_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYML_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RAYML_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RAYML_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("RAYML_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("RAYML_KAFKA__EXTRA", '{"socket.keepalive.enable": "true"}')
    settings = load_settings()
    conf = settings.kafka.client_config()
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "hunter2"
    assert conf["socket.keepalive.enable"] == "true"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.model_dump_json()
