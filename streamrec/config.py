"""The one typed configuration of every streamrec process.

Loaded once per process by :func:`load_config` from, in increasing priority:
the defaults below, a YAML file (``--config PATH`` or ``$STREAMREC_CONFIG``;
see ``config.example.yaml``), and environment variables such as
``STREAMREC_KAFKA__BOOTSTRAP=127.0.0.1:9092`` (section and field joined by ``__``).
Unknown keys are errors, and a validation error names the file and the field.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The k of every Recall@k, NDCG@k and hit rate we report, offline and online.
CUTOFF = 10


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    """Where the events come from and where the job's outputs go."""

    bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    items_topic: str = "items"
    recommendations_topic: str = "recommendations"
    # Partitions of the topics we create: 2 so that parallelism-2 runs really split the keys.
    partitions: int = Field(2, ge=1)
    consumer_group: str = "streamrec-interest"
    # Where a job without a checkpoint starts reading: the group's committed offsets (from the earliest when it
    # has none), or the earliest retained record whatever was committed (`streamrec job rebuild`).
    start_from: Literal["committed", "earliest"] = "committed"
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


class RedisConfig(_Section):
    """The online store front-ends read."""

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None


class FlinkConfig(_Section):
    """How the interest job runs."""

    # None: the embedded MiniCluster; else the REST address of a Flink cluster to submit to.
    cluster: str | None = None
    parallelism: int = Field(1, ge=1)
    # thread mode calls Python in the JVM's thread (no inter-process hop); process mode runs it in a worker
    # process (pandas UDFs and Python AsyncFunction need it). docs/performance.md compares the two.
    python_execution_mode: Literal["thread", "process"] = "thread"
    checkpoint_interval_ms: int = Field(5000, ge=100)
    # "none" makes a failure surface at once (tests of bounded inputs); a served job retries with backoff.
    restart_strategy: Literal["exponential-delay", "fixed-delay", "none"] = "exponential-delay"
    # Relative paths are taken from the run directory.
    checkpoint_dir: str = "checkpoints"
    # A checkpoint or savepoint to start from: `streamrec job start` sets it to the latest checkpoint.
    restore_from: str | None = None
    # Where `streamrec job stop --savepoint` writes savepoints; relative paths are taken from the run directory.
    savepoint_dir: str = "savepoints"
    # REST port of the embedded MiniCluster (stop-with-savepoint, metrics); `job start` picks a free one.
    rest_port: int | None = Field(None, ge=1, le=65535)


class JobConfig(_Section):
    """The user-interest job's knobs."""

    recent_items: int = Field(50, ge=1, description="last L items kept per user")
    top_k: int = Field(20, ge=1)
    max_seen_items: int = Field(5000, ge=1, description="items remembered per user to exclude from recs")
    # Items a user was shown without acting on them, counted per user for the repeat rule (policy.*.repeat_*); the
    # least recently shown go first. A front-end shows a few lists of tens of items between actions.
    max_shown_items: int = Field(200, ge=1)
    interest_half_life_hours: float = Field(24.0 * 7, gt=0)
    watermark_out_of_orderness_ms: int = Field(5000, ge=0)
    watermark_idleness_ms: int = Field(1000, ge=0)
    # A shard of the writer collects users for this long (or this many) before one scoring + Redis round trip.
    flush_interval_ms: int = Field(100, ge=1)
    writer_shards: int = Field(4, ge=1)
    # How often the writer looks for a newly promoted model (the hot-swap delay).
    model_check_interval_s: float = Field(2.0, gt=0)
    # onnxruntime threads of the writer's scorer. The job already keeps the cores busy (JVM, Python), and the
    # default pool (one spinning thread per core) spins on cores the job needs for itself.
    scorer_threads: int = Field(1, ge=1)
    dlq_reason_max_chars: int = Field(500, ge=20)
    # The writer scores the users whose state changed (each once, oldest first) for at most this share of each
    # flush interval: a scorer slower than the stream makes rec:{id} lag while user:{id} stays as fresh as the
    # flush, instead of backing events up in Kafka. Users scored later than max_rec_staleness_ms after their
    # change are counted (writer metric recs_late): the scorer needs capacity (a GPU, more parallelism).
    score_share: float = Field(0.25, gt=0, le=1)
    max_rec_staleness_ms: int = Field(2000, ge=0)
    # An event with an event_id seen for the same user within this long (processing time) is applied once.
    # Per user at most dedup_max_ids ids are kept (the oldest go first): the dedup state stays bounded.
    dedup_ttl_ms: int = Field(24 * 3600 * 1000, ge=0)
    dedup_max_ids: int = Field(1000, ge=1)
    # Redis writes from the stream (writer, catalog) retry with exponential backoff from the initial delay,
    # doubling up to the max delay, for at most redis_retry_timeout_s; then the task fails and Flink restarts
    # the job from its last checkpoint (the writes are overwrites derived from state: a replay converges).
    redis_backoff_initial_ms: int = Field(200, ge=1)
    redis_backoff_max_ms: int = Field(5000, ge=1)
    redis_retry_timeout_s: float = Field(60.0, gt=0)


class StackConfig(_Section):
    """The local stack `streamrec up` starts (and the test fixtures, on free ports)."""

    run_dir: str = ".streamrec"
    jars_dir: str = ".cache/jars"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    redis_port: int = 6379
    # The admin (Redis `default` user) password. With it, `streamrec up` also creates the least-privilege ACL
    # users redis.username (the stream's writers) and api.redis_username (read-only) with their passwords.
    redis_password: SecretStr | None = None
    flink_rest_port: int = 8081
    flink_rpc_port: int = 6123
    flink_taskmanager_slots: int = Field(2, ge=1)
    start_timeout_s: float = Field(60.0, gt=0)


class ApiConfig(_Section):
    """The front-end HTTP API."""

    host: str = "127.0.0.1"
    port: int = 8000
    # Bearer token of the endpoints that write or delete (DELETE /v1/users/{id}); unset: they answer 403.
    token: SecretStr | None = None
    # The API's own Redis identity (read-only ACL user `streamrec up` creates); unset: redis.username/password.
    redis_username: str | None = None
    redis_password: SecretStr | None = None


class ModelsConfig(_Section):
    """The model registry."""

    registry_dir: str = "models"


class TrainerConfig(_Section):
    """The periodic trainer (`streamrec trainer`): when it runs, what it trains, and the promotion gate."""

    # A run is due this often even when few records arrived (it then skips, with the reason logged) ...
    interval_s: float = Field(3600.0, gt=0)
    # ... or as soon as this many records arrived on the events topic. A run trains only if at least
    # this many events are newer than the serving model's training data.
    min_new_events: int = Field(1000, ge=2)
    # How often the long-running trainer reads the topic's end offsets (one cheap metadata request).
    check_interval_s: float = Field(5.0, gt=0)
    # The most recent share of the new events is held out to compare candidate and serving model;
    # only new events, so that neither model has trained on it.
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    # ... and at least this many: with fewer test cases the gate is decided by noise.
    min_holdout_events: int = Field(200, ge=1)
    # Epochs of a fine-tune from the serving model's weights: a few passes adapt it to the new events.
    fine_tune_epochs: int = Field(3, ge=1)
    # Epochs of a bootstrap (no serving model yet, or one without weights): as `streamrec train`.
    epochs: int = Field(30, ge=1)
    # Promote only if candidate[gate_metric] >= serving[gate_metric] + gate_min_delta on the window.
    # NDCG@10 moves with every rank in the top 10, so it is less noisy than Recall@10.
    gate_metric: Literal["recall@10", "ndcg@10", "mrr"] = "ndcg@10"
    # 0 means "not worse"; > 0 demands a gain; < 0 tolerates a small loss (e.g. for fresher items).
    gate_min_delta: float = 0.0
    # A training stops after the epoch that passes this many seconds; null: every epoch.
    max_train_seconds: float | None = Field(600.0, gt=0)
    # Items that arrived since the last training are scored from their text: their rows are scaled so
    # that, when relevant, they reach the top 10 this share as often as trained items (0: unscaled).
    cold_exposure: float = Field(1.0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _window_leaves_training_data(self) -> TrainerConfig:
        if self.min_holdout_events >= self.min_new_events:
            msg = (
                f"min_holdout_events ({self.min_holdout_events}) must be below min_new_events "
                f"({self.min_new_events}): the held-out window would take every new event"
            )
            raise ValueError(msg)
        return self


class ItemCondition(_Section):
    """Which items a rule applies to: every condition given must hold (none given: no item)."""

    item_ids: list[str] = Field(default_factory=list, description="one of these ids")
    category: str | None = Field(None, description="the item has this category")
    attribute: str | None = Field(None, description="a key of the item's attributes ...")
    equals: Any = Field(None, description="... whose value equals this (JSON: false, 0, \"x\")")

    @model_validator(mode="after")
    def _says_something(self) -> ItemCondition:
        if not (self.item_ids or self.category or self.attribute):
            raise ValueError("an item condition needs item_ids, category or attribute")
        return self


class BoostRule(_Section):
    """Raise the items that match, by ``by`` on the relevance scale (the model's candidates span 0..1)."""

    name: str
    when: ItemCondition
    by: float


class RulesConfig(_Section):
    """The business rules of one scenario (or one experiment arm): what turns the model's candidates into a list.

    The job applies them once per user scored (:mod:`serving.policy`); the API applies ``exclude`` again on
    read, so an item marked unavailable leaves every answer at once, before the next flush rewrites the lists.
    """

    # Never shown, e.g. {attribute: available, equals: false}.
    exclude: list[ItemCondition] = Field(default_factory=list)
    boosts: list[BoostRule] = Field(default_factory=list)
    # Put first, in this order (when recommendable: in the catalog, not excluded, not already seen).
    pins: list[str] = Field(default_factory=list)
    max_per_category: int | None = Field(None, ge=1)
    # Items whose `ts` is at most fresh_hours older than the user's newest event gain fresh_boost.
    fresh_boost: float = Field(0.0, ge=0)
    fresh_hours: float = Field(72.0, gt=0)
    # An item shown repeat_impressions times without an action is demoted below every other candidate, until
    # repeat_cooldown_s have passed since it was last shown (null: no repeat rule).
    repeat_impressions: int | None = Field(5, ge=1)
    repeat_cooldown_s: float = Field(24 * 3600.0, ge=0)
    # Maximal marginal relevance over the model's item rows: 0 keeps the model's order.
    diversity: float = Field(0.6, ge=0, le=1)
    # The scorer's candidates per list, as a multiple of job.top_k: what the rules choose from.
    candidates: float = Field(3.0, ge=1)
    # Each item carries its reason (the history item it is most like, or the rule that placed it).
    explain: bool = True


class ArmConfig(_Section):
    """One arm of an experiment: a model version and/or a rule set."""

    weight: float = Field(1.0, gt=0)
    # A registry version (null: the promoted one).
    model_version: str | None = None
    # A key of policy.rule_sets (null: the scenario's rules).
    rules: str | None = None


class ExperimentConfig(_Section):
    """An A/B experiment: users split between arms by a stable hash of the user id, between start and end."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Only users whose newest event is of this scenario (null: every scenario).
    scenario: str | None = None
    arms: dict[str, ArmConfig] = Field(min_length=2)
    start: datetime | None = None
    end: datetime | None = None
    # Team-draft interleaving of the first two arms in one list per user, instead of a split: every user sees
    # both, and an action credits the arm whose pick it was.
    interleave: bool = False


class PolicyConfig(_Section):
    """Business rules per scenario, named rule sets for experiment arms, and the experiments."""

    default: RulesConfig = RulesConfig()
    scenarios: dict[str, RulesConfig] = Field(default_factory=dict)
    rule_sets: dict[str, RulesConfig] = Field(default_factory=dict)
    experiments: list[ExperimentConfig] = Field(default_factory=list)
    # A YAML file with these same fields, re-read when it changes (hot reload: the job's lists and the API's
    # filters follow it within reload_interval_s); relative paths are taken from the project root. Null: the
    # policy above, fixed for the process's life.
    file: str | None = None
    reload_interval_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _names_resolve(self) -> PolicyConfig:
        names = [e.name for e in self.experiments]
        if len(names) != len(set(names)):
            msg = f"experiment names must be unique, got {names}"
            raise ValueError(msg)
        for e in self.experiments:
            for arm_name, arm in e.arms.items():
                if arm.rules is not None and arm.rules not in self.rule_sets:
                    msg = f"experiment {e.name} arm {arm_name}: no rule set {arm.rules!r}"
                    raise ValueError(msg)
        return self


class Settings(_Section):
    """Everything a streamrec process reads, once."""

    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    flink: FlinkConfig = FlinkConfig()
    job: JobConfig = JobConfig()
    stack: StackConfig = StackConfig()
    api: ApiConfig = ApiConfig()
    models: ModelsConfig = ModelsConfig()
    trainer: TrainerConfig = TrainerConfig()
    policy: PolicyConfig = PolicyConfig()

    def path(self, value: str) -> Path:
        """Resolve a configured path: absolute as is, relative from the project root."""
        p = Path(value)
        return p if p.is_absolute() else PROJECT_ROOT / p

    @property
    def run_dir(self) -> Path:
        """Where the local stack keeps its data, logs and state file."""
        return self.path(self.stack.run_dir)

    def run_path(self, value: str) -> Path:
        """Resolve a path the config takes from the run directory: absolute as is, else under :attr:`run_dir`.

        ``flink.checkpoint_dir`` and ``flink.savepoint_dir`` are such paths.
        """
        p = Path(value)
        return p if p.is_absolute() else self.run_dir / p


def secret_value(secret: SecretStr | None) -> str | None:
    """The plain text of a configured secret (a password, a token); None when it is not set."""
    return secret.get_secret_value() if secret else None


def kafka_client_options(kafka: KafkaConfig) -> dict[str, Any]:
    """kafka-python client options for the configured security protocol and SASL credentials.

    Every kafka-python client of ours (the SDK's producer, the trainer's event log, the CLI) takes them, and the
    job's Flink connectors derive their Java properties from them (:func:`jobs.kafka_io.client_properties`).
    """
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = secret_value(kafka.sasl_password)
    return options


class ConfigError(Exception):
    """The configuration could not be loaded; the message names the source and the field."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"invalid streamrec configuration in {source}: {detail}")


ENV_PREFIX = "STREAMREC_"


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, field = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[field] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load the settings: defaults < YAML file < ``STREAMREC_<SECTION>__<FIELD>`` variables."""
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get("STREAMREC_CONFIG")
    data: dict[str, Any] = {}
    source = "defaults"
    if path:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(source, str(exc)) from exc
        loaded = {} if loaded is None else loaded  # an empty file
        if not isinstance(loaded, dict):
            raise ConfigError(source, "the top level must be a mapping of sections")
        data = loaded
    env = _env_overrides(environ)
    if env:
        source += " + STREAMREC_* environment"
    try:
        return Settings.model_validate(_merge(data, env))
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(source, fields) from exc


def dump_config(settings: Settings, path: Path) -> Path:
    """Write settings as a YAML file :func:`load_config` reads back (secrets included: keep it private)."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(plain(settings.model_dump())))
    path.chmod(0o600)
    return path
