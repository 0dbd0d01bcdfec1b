"""Typed settings shared by the producer and the worker.

Read from ``EMBEDQ_*`` environment variables (nested groups joined by ``__``, e.g.
``EMBEDQ_REDIS__URL``) and from a ``.env`` file in the working directory. Load them once at the
edge of the program with :func:`load_settings` and pass the object down; nothing deeper reads the
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from embedq.config.errors import ConfigError
from embedq.config.models import (
    BUNDLED_MODEL,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    ModelOptions,
    ModelSettings,
    builtin_models,
)
from embedq.config.names import COLLECTION_NAME, COLLECTION_RULE, model_name

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "BatchSettings",
    "ChunkSettings",
    "FlowerSettings",
    "JobSettings",
    "MetricsSettings",
    "MilvusSettings",
    "ModelOptions",
    "ModelSettings",
    "RedisSettings",
    "Settings",
    "StandaloneSettings",
    "WorkerSettings",
    "env_name",
    "load_settings",
]

ENV_PREFIX = "EMBEDQ_"


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets the field at ``loc`` (``("redis", "url")``)."""
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def _redact(url: str) -> str:
    """A URL fit for an error message: no user information and no query string (either may
    hold a password, and a password with / # ? @ in it breaks URL parsing)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>" if "@" in url else url
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}://{rest.split('?', 1)[0]}"


def _no_secret_in_query(url: str, variable: str, field: str) -> None:
    query = urlsplit(url).query.lower()
    if "password" in query or "token" in query:
        raise ValueError(
            f"{variable} carries a secret in its query string; put it in {field} instead "
            "(secrets in URLs end up in logs)"
        )


def _move_credentials(data: Any, url_key: str, user_key: str, password_key: str) -> Any:
    """Move ``user:password@`` out of a URL field into the user and secret fields (values set
    explicitly win). The user information ends at the last ``@``, so a password holding
    / # ? or @ is read whole rather than spilling into the path."""
    if not isinstance(data, dict) or not isinstance(data.get(url_key), str):
        return data
    scheme, sep, rest = data[url_key].partition("://")
    if not sep or "@" not in rest:
        return data
    userinfo, _, location = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    data = dict(data)
    data[url_key] = f"{scheme}://{location}"
    if user and not data.get(user_key):
        data[user_key] = unquote(user)
    if colon and not data.get(password_key):
        data[password_key] = unquote(password)
    return data


#: Groups of ~1024 texts are where encode + write reach full speed (bench/): a backlog of small
#: batches is grouped up to that, whatever their size, unless EMBEDQ_WORKER__COALESCE_TEXTS says.
DEFAULT_COALESCE_TEXTS = 1024


class RedisSettings(BaseModel):
    """The broker, the result backend and the job-progress store (one Redis)."""

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://, rediss:// (TLS) or unix:// URL of the Redis server",
    )
    username: str | None = Field(None, description="ACL user name (or put it in the URL)")
    password: SecretStr | None = Field(None, description="password; never logged")
    ssl_cert_reqs: Literal["required", "optional", "none"] = Field(
        "required", description="certificate check for rediss:// URLs"
    )
    ssl_ca_certs: Path | None = Field(None, description="CA bundle for rediss:// URLs")

    @model_validator(mode="before")
    @classmethod
    def _move_credentials_out_of_url(cls, data: Any) -> Any:
        # A password written into the URL goes into the SecretStr field, so that the URL
        # itself can be shown in logs and reprs without leaking it.
        return _move_credentials(data, "url", "username", "password")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        _no_secret_in_query(value, "EMBEDQ_REDIS__URL", "EMBEDQ_REDIS__PASSWORD")
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                f"{_redact(value)!r} is not a Redis URL; use redis://HOST:PORT/DB, "
                "rediss://HOST:PORT/DB "
                "(TLS) or unix:///path/to/redis.sock"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError(f"{_redact(value)!r} has no host; use redis://HOST:PORT/DB")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(
                f"{_redact(value)!r} has an invalid port; use a number 1-65535"
            ) from None
        return value

    def connection_url(self) -> str:
        """The URL with credentials filled in: hand it to clients, never to a log line."""
        if self.password is None and self.username is None:
            return self.url
        parts = urlsplit(self.url)
        user = quote(self.username or "", safe="")
        secret = quote(self.password.get_secret_value(), safe="") if self.password else ""
        auth = f"{user}:{secret}@" if secret else f"{user}@"
        return urlunsplit(parts._replace(netloc=auth + parts.netloc))

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 6379


class MilvusSettings(BaseModel):
    """Where vectors are stored."""

    uri: str = Field(
        "http://127.0.0.1:19530",
        description="Milvus (or Milvus Lite server) address, http(s)://HOST:PORT",
    )
    token: SecretStr | None = Field(None, description="API token (Zilliz Cloud / auth enabled)")
    user: str | None = Field(None, description="user name (with password)")
    password: SecretStr | None = Field(None, description="password; never logged")
    db_name: str = Field("", description="database; empty = the server's default")
    collection: str = Field("embedq", description="collection used when a call names none")
    consistency_level: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Strong", description="read consistency of created collections and of searches"
    )
    metric_type: Literal["COSINE", "IP", "L2"] = Field("COSINE", description="search metric")
    timeout: float = Field(30.0, gt=0, description="seconds per Milvus call")
    flush: Literal["auto", "always", "never"] = Field(
        "auto",
        description=(
            "flush after each batch before acknowledging it; auto = only on a plain Milvus "
            "Lite server (embedq's own Lite server and Milvus servers need none)"
        ),
    )
    upsert_max_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        le=60 * 1024 * 1024,
        description="rows per upsert call are capped by this size (Milvus refuses > 64 MB)",
    )
    column_upsert: bool = Field(
        True,
        description=(
            "build each upsert request by column, vectors as one block (about 10x faster to "
            "build); false: pymilvus's own MilvusClient.upsert of row dicts"
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _move_credentials_out_of_uri(cls, data: Any) -> Any:
        return _move_credentials(data, "uri", "user", "password")

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        _no_secret_in_query(value, "EMBEDQ_MILVUS__URI", "EMBEDQ_MILVUS__TOKEN")
        parts = urlsplit(value)
        if parts.username is not None or "@" in parts.netloc:
            raise ValueError(
                f"{_redact(value)!r} has credentials that could not be read; set "
                "EMBEDQ_MILVUS__USER and EMBEDQ_MILVUS__PASSWORD"
            )
        if parts.scheme not in {"http", "https", "tcp", "grpc"} or not parts.hostname:
            raise ValueError(
                f"{_redact(value)!r} is not a Milvus server address; use http://HOST:19530 "
                "(start one "
                "with `embedq standalone`, or a Milvus server)"
            )
        return value

    @field_validator("collection")
    @classmethod
    def _check_collection(cls, value: str) -> str:
        if not COLLECTION_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid collection name; {COLLECTION_RULE}")
        return value


class BatchSettings(BaseModel):
    """How the producer cuts input into queue messages, and what one text may be."""

    size: int = Field(256, ge=1, le=10_000, description="texts or documents per queue message")
    max_bytes: int = Field(
        1024 * 1024,
        ge=16 * 1024,
        description="a queue message is also cut at this many bytes of texts, so that long "
        "documents spread over the workers (a larger document travels alone)",
    )
    max_document_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="largest text or document accepted (UTF-8 bytes)",
    )
    overlong: Literal["chunk", "reject", "truncate"] = Field(
        "chunk",
        description="a plain text longer than the model reads is split into chunks, rejected, "
        "or cut (the job counts truncated texts); documents are always chunked",
    )
    max_metadata_bytes: int = Field(
        16_384, ge=2, le=65_536, description="largest metadata object, as compact JSON"
    )
    max_id_length: int = Field(256, ge=8, le=512, description="longest id (characters)")


def _model_names(value: Any) -> Any:
    """A comma-separated list from the environment, or a list; lower case, checked."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        return value
    return [model_name(name) for name in value]


class ChunkSettings(BaseModel):
    """How workers split documents (and overlong texts) into chunks, with the model's own
    tokenizer, at paragraph, line, sentence and word boundaries where possible."""

    tokens: int = Field(
        256, ge=8, le=8192, description="most tokens in a chunk (at most the model's max_length)"
    )
    overlap: int = Field(
        0, ge=0, description="tokens of the previous chunk repeated at the start of the next"
    )

    @model_validator(mode="after")
    def _check_overlap(self) -> ChunkSettings:
        if self.overlap * 2 > self.tokens:
            raise ValueError(
                f"EMBEDQ_CHUNKS__OVERLAP ({self.overlap}) must be at most half of "
                f"EMBEDQ_CHUNKS__TOKENS ({self.tokens})"
            )
        return self


class WorkerSettings(BaseModel):
    """Task execution: limits, retries and the Redis visibility timeout."""

    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="models this worker serves, comma-separated names; empty = the default model",
    )
    concurrency: int | None = Field(None, ge=1, description="processes per worker; None = cores")
    time_limit: int = Field(300, ge=5, description="hard limit of one task (seconds)")
    soft_time_limit: int = Field(240, ge=1, description="soft limit; the task gives up cleanly")
    max_retries: int = Field(
        20, ge=0, description="retries on transient store/broker errors (about 15 min in all)"
    )
    retry_backoff_max: int = Field(120, ge=1, description="longest wait between retries (s)")
    visibility_timeout: int = Field(
        3600,
        ge=10,
        description="Redis redelivers an unacknowledged task after this (s); > limit + backoff",
    )
    lease: float = Field(
        10.0,
        ge=1.0,
        le=3600.0,
        description="a node that has not renewed its lease for this long is dead: its "
        "in-flight batches go back to the queue (s)",
    )
    recovery_interval: float = Field(
        2.0,
        gt=0,
        le=600.0,
        description="how often a node renews its lease and looks for dead nodes' batches (s)",
    )
    atomic_fetch: bool = Field(
        True,
        description="take each message and record it as held in one Redis script; false = "
        "kombu's BRPOP (a node killed mid-take can lose a batch)",
    )
    lazy_pandas: bool = Field(
        True,
        description="answer pymilvus's import of pandas with stand-ins until pandas is used, "
        "and keep pyarrow out of workers (about 70 MB less per process); false = import both",
    )
    pause_after_take: float = Field(
        0.0,
        ge=0,
        description="test-only fault point: seconds a node sleeps after taking a message",
    )
    pause_before_write: float = Field(
        0.0,
        ge=0,
        description="test-only fault point: seconds a worker sleeps between claiming "
        "documents and writing their chunks",
    )
    coalesce_texts: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="a batch smaller than EMBEDQ_BATCH__SIZE is embedded with the small ones "
        f"waiting behind it, up to this many texts; unset = {DEFAULT_COALESCE_TEXTS} or "
        "EMBEDQ_BATCH__SIZE if larger, 0 = off",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        le=512 * 1024 * 1024,
        description="larger queue messages are dead-lettered unread",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="worker log level"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="worker log lines: text, or one JSON object per line"
    )

    _check_models = field_validator("models", mode="before")(_model_names)

    @model_validator(mode="after")
    def _check_limits(self) -> WorkerSettings:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError(
                f"EMBEDQ_WORKER__SOFT_TIME_LIMIT ({self.soft_time_limit}) must be below "
                f"EMBEDQ_WORKER__TIME_LIMIT ({self.time_limit})"
            )
        # A task still running (or waiting for its retry ETA) when the visibility timeout ends
        # is handed to a second worker: keep the timeout above both.
        # A retry waiting for its countdown may then wait for a busy process to finish its
        # task, hence two time limits.
        # Two missed renewals must not pass for a death.
        if self.recovery_interval * 3 > self.lease:
            raise ValueError(
                f"EMBEDQ_WORKER__RECOVERY_INTERVAL ({self.recovery_interval}) must be at most a "
                f"third of EMBEDQ_WORKER__LEASE ({self.lease}), or a node that misses one "
                "renewal is taken for dead"
            )
        floor = 2 * self.time_limit + self.retry_backoff_max
        if self.visibility_timeout <= floor:
            raise ValueError(
                f"EMBEDQ_WORKER__VISIBILITY_TIMEOUT ({self.visibility_timeout}) must exceed "
                f"2 x EMBEDQ_WORKER__TIME_LIMIT + EMBEDQ_WORKER__RETRY_BACKOFF_MAX ({floor}), or "
                "Redis hands a long task to a second worker while the first still runs it"
            )
        return self


class JobSettings(BaseModel):
    """Per-job progress records kept in Redis."""

    ttl_seconds: int = Field(7 * 24 * 3600, ge=60, description="progress records expire after")
    search_timeout: float = Field(30.0, gt=0, description="seconds a search waits for a worker")
    max_dead_letters: int = Field(
        100_000, ge=100, description="dead letters kept; the oldest are dropped beyond this"
    )


class FlowerSettings(BaseModel):
    """Flower, the Celery dashboard (``embedq flower``)."""

    address: str = Field("127.0.0.1", description="listen address")
    port: int = Field(5555, ge=1, le=65535, description="listen port")
    user: str | None = Field(None, description="basic-auth user")
    password: SecretStr | None = Field(None, description="basic-auth password; never logged")
    sent_events: bool = Field(
        False,
        description=(
            "producers announce each queued batch (Flower shows it PENDING before a worker "
            "takes it); costs a Redis publish per batch"
        ),
    )

    @model_validator(mode="after")
    def _check_auth(self) -> FlowerSettings:
        if (self.user is None) != (self.password is None):
            raise ValueError(
                "set both EMBEDQ_FLOWER__USER and EMBEDQ_FLOWER__PASSWORD (basic auth), or neither"
            )
        return self


class MetricsSettings(BaseModel):
    """embedq's Prometheus metrics, served by each worker node's main process."""

    port: int = Field(9808, ge=0, le=65535, description="listen port of /metrics; 0 = off")
    address: str = Field("127.0.0.1", description="listen address (0.0.0.0 in containers)")
    dir: Path | None = Field(
        None,
        description="where pool processes write their samples; unset = a fresh temporary folder",
    )


class StandaloneSettings(BaseModel):
    """The one-machine stack started by ``embedq standalone``."""

    data_dir: Path = Field(
        Path.home() / ".local" / "share" / "embedq",
        description="Redis AOF and Milvus Lite data live here",
    )
    workers: int = Field(2, ge=1, description="worker processes")


class Settings(BaseSettings):
    """All of embedq's settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    redis: RedisSettings = Field(default_factory=RedisSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    #: More models by name (EMBEDQ_MODELS__<NAME>__SOURCE=...), for mixed fleets and reindexing.
    models: dict[str, ModelOptions] = Field(default_factory=dict)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    chunks: ChunkSettings = Field(default_factory=ChunkSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    standalone: StandaloneSettings = Field(default_factory=StandaloneSettings)

    @model_validator(mode="before")
    @classmethod
    def _default_model_by_name(cls, data: Any) -> Any:
        # EMBEDQ_MODEL__NAME may name a model defined under EMBEDQ_MODELS: take its options.
        if not isinstance(data, dict):
            return data
        model, models = data.get("model"), data.get("models")
        if not (isinstance(model, dict) and isinstance(models, dict)):
            return data
        name = model.get("name")
        if "source" in model or not isinstance(name, str):
            return data
        named = {str(k).lower(): v for k, v in models.items()}.get(name.strip().lower())
        if isinstance(named, ModelOptions):
            named = named.model_dump()
        if isinstance(named, dict):
            return {**data, "model": {**named, **model}}
        return data

    @field_validator("models", mode="before")
    @classmethod
    def _lower_case_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {model_name(name): options for name, options in value.items()}

    @model_validator(mode="after")
    def _check_served_models(self) -> Settings:
        known = self.catalog()
        unknown = [name for name in self.worker.models if name not in known]
        if unknown:
            raise ValueError(
                f"EMBEDQ_WORKER__MODELS names unknown model(s) {', '.join(unknown)}; known: "
                f"{', '.join(known)}. Define one with EMBEDQ_MODELS__<NAME>__SOURCE"
            )
        for model in self.served_models():
            if model.max_length is not None and self.chunks.tokens > model.max_length:
                raise ValueError(
                    f"EMBEDQ_CHUNKS__TOKENS ({self.chunks.tokens}) is more than model "
                    f"{model.name!r} reads (max_length {model.max_length}); lower it, or the "
                    "end of every full chunk would be cut off"
                )
        return self

    def catalog(self) -> dict[str, ModelSettings]:
        """Every model these settings know by name: the built-in ones, EMBEDQ_MODELS and the
        default model (EMBEDQ_MODEL__*), later ones overriding earlier ones of the same name."""
        found = {
            name: ModelSettings(name=name, source=source)
            for name, source in builtin_models().items()
        }
        for name, options in self.models.items():
            found[name] = ModelSettings(name=name, **options.model_dump())
        found[self.model.name] = self.model
        return found

    def model_named(self, name: str | None) -> ModelSettings:
        """The model called ``name`` (the default model for None)."""
        if name is None:
            return self.model
        found = self.catalog().get(name.strip().lower())
        if found is None:
            raise ConfigError(
                f"unknown model {name!r}; known: {', '.join(self.catalog())}. Define one with "
                "EMBEDQ_MODELS__<NAME>__SOURCE"
            )
        return found

    def coalesce_texts(self) -> int:
        """Texts a small batch is grouped up to with the small ones waiting behind it."""
        if self.worker.coalesce_texts is not None:
            return self.worker.coalesce_texts
        return max(self.batch.size, DEFAULT_COALESCE_TEXTS)

    def served_models(self) -> list[ModelSettings]:
        """The models a worker with these settings loads and serves."""
        if not self.worker.models:
            return [self.model]
        return [self.model_named(name) for name in dict.fromkeys(self.worker.models)]


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into one :class:`ConfigError`.

    The message names each offending environment variable and what to put in it.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(part for part in error["loc"] if part != "__root__")
            msg = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "missing":
                msg = "is required"
            # The input is not echoed back: it may be a secret.
            where = env_name(loc) if loc else ENV_PREFIX + "*"
            # A message that names its variable itself needs no prefix.
            lines.append(f"  {msg}" if msg.startswith(ENV_PREFIX) else f"  {where}: {msg}")
        raise ConfigError("invalid embedq settings:\n" + "\n".join(lines)) from None
