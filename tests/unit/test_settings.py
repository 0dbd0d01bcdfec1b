"""Settings: defaults point at the standalone stack; bad values fail at start-up with the
variable's name and the fix; secrets never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedq.config.errors import ConfigError
from embedq.config.settings import KNOWN_MODELS, Settings, load_settings


def test_defaults_point_at_the_standalone_stack() -> None:
    settings = load_settings()
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.milvus.uri == "http://127.0.0.1:19530"
    assert settings.model.source == "bundled"
    assert settings.batch.size == 256


def test_nested_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDQ_BATCH__SIZE", "64")
    monkeypatch.setenv("EMBEDQ_MILVUS__COLLECTION", "docs")
    monkeypatch.setenv("EMBEDQ_MODEL__SOURCE", "potion-base-8M")
    settings = load_settings()
    assert settings.batch.size == 64
    assert settings.milvus.collection == "docs"
    assert settings.model.hub_id == "minishlab/potion-base-8M"


def test_dotenv_file_is_read(tmp_path: object) -> None:
    with open(".env", "w") as handle:  # the autouse fixture chdirs into tmp_path
        handle.write("EMBEDQ_BATCH__SIZE=7\n")
    assert load_settings().batch.size == 7


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("EMBEDQ_REDIS__URL", "http://localhost:6379", "redis://"),
        ("EMBEDQ_REDIS__URL", "redis://", "no host"),
        ("EMBEDQ_REDIS__URL", "redis://h:99999/0", "port"),
        ("EMBEDQ_MILVUS__URI", "localhost:19530", "http://HOST:19530"),
        ("EMBEDQ_MILVUS__COLLECTION", "1bad-name", "letter or _"),
        ("EMBEDQ_BATCH__SIZE", "-1", "greater than or equal to 1"),
        ("EMBEDQ_BATCH__SIZE", "lots", "valid integer"),
        ("EMBEDQ_BATCH__OVERLONG", "shorten", "'reject' or 'truncate'"),
        ("EMBEDQ_MODEL__SOURCE", "potion-base-9M", "unknown model"),
        ("EMBEDQ_MODEL__NAME", "has space", "valid model name"),
        ("EMBEDQ_WORKER__VISIBILITY_TIMEOUT", "700", "must exceed 2 x EMBEDQ_WORKER__TIME_LIMIT"),
        ("EMBEDQ_WORKER__SOFT_TIME_LIMIT", "400", "below EMBEDQ_WORKER__TIME_LIMIT"),
        ("EMBEDQ_WORKER__RECOVERY_INTERVAL", "5", "at most a third of EMBEDQ_WORKER__LEASE"),
        ("EMBEDQ_WORKER__LEASE", "0.5", "greater than or equal to 1"),
        ("EMBEDQ_WORKER__PAUSE_AFTER_TAKE", "-1", "greater than or equal to 0"),
    ],
)
def test_invalid_values_name_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert variable in message
    assert fragment in message


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="EMBEDQ_BATCH__SIZE"):
        load_settings(batch={"size": 0})


def test_password_in_redis_url_is_moved_out_and_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBEDQ_REDIS__URL", "redis://app:s3cr%40t@redis.internal:6380/2")
    settings = load_settings()
    assert "s3cr" not in settings.redis.url
    assert "s3cr" not in repr(settings)
    assert "s3cr" not in str(settings.model_dump())
    assert settings.redis.connection_url() == "redis://app:s3cr%40t@redis.internal:6380/2"


def test_bad_secret_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDQ_REDIS__URL", "ftp://user:hunter2@host/0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)


def test_known_models_are_the_five_potion_models() -> None:
    assert set(KNOWN_MODELS.values()) == {
        "minishlab/potion-base-8M",
        "minishlab/potion-base-4M",
        "minishlab/potion-base-2M",
        "minishlab/potion-base-32M",
        "minishlab/potion-retrieval-32M",
    }
    for alias in KNOWN_MODELS:
        assert Settings(model={"source": alias}).model.hub_id == KNOWN_MODELS[alias]


def test_local_path_is_never_taken_for_a_hub_id(tmp_path: Path) -> None:
    assert load_settings(model={"source": "./no/such/folder"}).model.hub_id is None
    (tmp_path / "models").mkdir()  # the autouse fixture chdirs into tmp_path
    assert load_settings(model={"source": "models/mine"}).model.hub_id is None
    assert load_settings(model={"source": "minishlab/potion-base-8M"}).model.hub_id is not None


def test_milvus_credentials_in_the_uri_are_moved_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDQ_MILVUS__URI", "https://root:Milvus%21@db.example:19530")
    settings = load_settings()
    assert settings.milvus.uri == "https://db.example:19530"
    assert settings.milvus.user == "root"
    assert settings.milvus.password is not None
    assert settings.milvus.password.get_secret_value() == "Milvus!"
    assert "Milvus!" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        ("EMBEDQ_REDIS__URL", "redis://:pa/ss0rd@redis.internal:6379/0", "ss0rd"),
        ("EMBEDQ_REDIS__URL", "redis://user:p#ssw0rd@redis.internal:6379/0", "ssw0rd"),
        ("EMBEDQ_REDIS__URL", "redis://redis.internal:6379/0?password=hunter22", "hunter22"),
        ("EMBEDQ_MILVUS__URI", "http://root:pa/ss99@db:19530", "ss99"),
        ("EMBEDQ_MILVUS__URI", "http://db:19530?token=tok3n", "tok3n"),
        ("EMBEDQ_REDIS__URL", "memcached://u:sekr3t@host/0", "sekr3t"),
    ],
)
def test_secrets_in_bad_urls_never_reach_the_error_or_the_settings(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, secret: str
) -> None:
    monkeypatch.setenv(variable, value)
    try:
        settings = load_settings()
    except ConfigError as exc:
        message = str(exc)
    else:
        message = repr(settings) + settings.redis.url + settings.milvus.uri
    assert secret not in message


def test_named_models_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDQ_MODELS__FAST__SOURCE", "potion-base-8M")
    monkeypatch.setenv("EMBEDQ_MODELS__LOCAL__SOURCE", "/models/mine")
    monkeypatch.setenv("EMBEDQ_MODELS__LOCAL__QUANTIZE_TO", "int8")
    monkeypatch.setenv("EMBEDQ_WORKER__MODELS", "minilm-l6-distilled, Local")
    settings = load_settings()
    # the default stays the bundled model; the others are known by (lower-case) name
    assert settings.model.name == "minilm-l6-distilled" and settings.model.source == "bundled"
    assert settings.model_named("FAST").hub_id == "minishlab/potion-base-8M"
    assert settings.model_named("local").quantize_to == "int8"
    assert [m.name for m in settings.served_models()] == ["minilm-l6-distilled", "local"]
    # and the five potion aliases are built in
    assert settings.model_named("potion-retrieval-32M").hub_id == ("minishlab/potion-retrieval-32M")


def test_the_default_model_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDQ_MODELS__FAST__SOURCE", "/models/fast")
    monkeypatch.setenv("EMBEDQ_MODEL__NAME", "fast")
    assert load_settings().model.source == "/models/fast"
    monkeypatch.setenv("EMBEDQ_MODEL__NAME", "potion-base-2M")
    assert load_settings().model.hub_id == "minishlab/potion-base-2M"
    # a source alone names the model after it
    monkeypatch.delenv("EMBEDQ_MODEL__NAME")
    monkeypatch.setenv("EMBEDQ_MODEL__SOURCE", "/models/my-model")
    assert load_settings().model.name == "my-model"
    assert load_settings().served_models() == [load_settings().model]


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("EMBEDQ_MODEL__NAME", "nope", "EMBEDQ_MODELS__NOPE__SOURCE"),
        ("EMBEDQ_WORKER__MODELS", "minilm-l6-distilled,nope", "EMBEDQ_WORKER__MODELS"),
        ("EMBEDQ_WORKER__MODELS", "bad name", "valid model name"),
        ("EMBEDQ_MODELS__X__SOURCE", "potion-base-9M", "unknown model"),
    ],
)
def test_unknown_or_bad_model_names_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=fragment) as info:
        load_settings()
    assert variable.split("__")[0] in str(info.value)
