"""Loading the one typed config: defaults < YAML < STREAMREC_* environment, and errors that name file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.config import PROJECT_ROOT, ConfigError, JobConfig, Settings, load_config


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_load_without_file_or_environment() -> None:
    s = load_config(None, environ={})
    assert s == Settings()
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert s.kafka.events_topic == "events" and s.kafka.dlq_topic == "events.dlq"
    assert s.flink.parallelism == 1 and s.flink.cluster is None
    assert s.job.recent_items == 50 and s.job.interest_half_life_hours == 24.0 * 7
    assert s.redis.password is None


def test_yaml_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap: broker:1234\njob:\n  recent_items: 7\n  top_k: 3\n")
    s = load_config(path, environ={})
    assert s.kafka.bootstrap == "broker:1234"
    assert s.kafka.events_topic == "events"  # untouched field of an overridden section
    assert (s.job.recent_items, s.job.top_k, s.job.max_seen_items) == (7, 3, 5000)
    assert s.redis == Settings().redis


def test_path_as_str_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  port: 9001\n")
    assert load_config(str(path), environ={}).api.port == 9001


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ={}) == Settings()


def test_environment_overrides_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrap: from-yaml:1\n  events_topic: ev\n")
    s = load_config(path, environ={"STREAMREC_KAFKA__BOOTSTRAP": "from-env:2"})
    assert s.kafka.bootstrap == "from-env:2"
    assert s.kafka.events_topic == "ev"


def test_environment_values_are_coerced_to_field_types() -> None:
    s = load_config(
        None, environ={"STREAMREC_FLINK__PARALLELISM": "2", "STREAMREC_JOB__INTEREST_HALF_LIFE_HOURS": "1.5"}
    )
    assert s.flink.parallelism == 2 and s.job.interest_half_life_hours == 1.5


def test_unrelated_environment_is_ignored() -> None:
    env = {"PATH": "/bin", "STREAMREC_VERBOSE": "1", "KAFKA__BOOTSTRAP": "x:1", "OTHER_KAFKA__BOOTSTRAP": "y:2"}
    assert load_config(None, environ=env) == Settings()


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  url: redis://r:1/2\n")
    assert load_config(None, environ={"STREAMREC_CONFIG": str(path)}).redis.url == "redis://r:1/2"
    other = write(tmp_path, "redis:\n  url: redis://explicit:1/0\n", "other.yaml")
    assert load_config(other, environ={"STREAMREC_CONFIG": str(path)}).redis.url == "redis://explicit:1/0"


def test_unknown_yaml_key_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  bootstrapp: typo:1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert str(path) in message and "kafka.bootstrapp" in message
    assert isinstance(info.value.__cause__, ValidationError)


def test_unknown_section_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kafak"):
        load_config(write(tmp_path, "kafak:\n  bootstrap: x:1\n"), environ={})


def test_unknown_environment_field_names_the_environment() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"STREAMREC_KAFKA__BOOTSTRAPP": "x:1"})
    assert "STREAMREC_* environment" in str(info.value) and "kafka.bootstrapp" in str(info.value)


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("flink:\n  parallelism: 0\n", "flink.parallelism"),
        ("flink:\n  parallelism: many\n", "flink.parallelism"),
        ("flink:\n  python_execution_mode: fast\n", "flink.python_execution_mode"),
        ("job:\n  interest_half_life_hours: 0\n", "job.interest_half_life_hours"),
        ("job:\n  dlq_reason_max_chars: 5\n", "job.dlq_reason_max_chars"),
        ("kafka:\n  partitions: 0\n", "kafka.partitions"),
        ("kafka:\n  security_protocol: TLS\n", "kafka.security_protocol"),
        ("kafka: 3\n", "kafka"),
        ("trainer:\n  gate_metric: auc\n", "trainer.gate_metric"),
        ("trainer:\n  holdout_fraction: 1.0\n", "trainer.holdout_fraction"),
        ("trainer:\n  min_new_events: 50\n  min_holdout_events: 50\n", "min_holdout_events (50) must be below"),
    ],
)
def test_wrong_value_names_file_and_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(path) in str(info.value) and field in str(info.value)


def test_wrong_environment_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"flink\.parallelism"):
        load_config(None, environ={"STREAMREC_FLINK__PARALLELISM": "0"})


@pytest.mark.parametrize("text", ["- kafka\n- redis\n", "just a string\n", "42\n"])
def test_non_mapping_top_level_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(path, environ={})
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["0\n", "false\n", "[]\n"])
def test_falsy_non_mapping_top_level_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, text), environ={})


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(missing, environ={})
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(write(tmp_path, "kafka: [unclosed\n", "bad.yaml"), environ={})


def test_secrets_are_not_shown(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, "redis:\n  password: hunter2\n"), environ={})
    assert s.redis.password is not None and s.redis.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.redis)


def test_settings_are_frozen() -> None:
    s = load_config(None, environ={})
    with pytest.raises(ValidationError):
        s.kafka.bootstrap = "x:1"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.job = JobConfig()  # type: ignore[misc, call-arg]
    assert s.kafka.bootstrap == "127.0.0.1:9092"


def test_sections_forbid_unknown_fields_when_built_in_code() -> None:
    with pytest.raises(ValidationError):
        JobConfig(recent_itemz=3)  # type: ignore[call-arg]


def test_path_relative_is_under_project_root_absolute_is_kept(tmp_path: Path) -> None:
    s = Settings()
    assert s.path("checkpoints") == PROJECT_ROOT / "checkpoints"
    assert s.path(str(tmp_path / "abs")) == tmp_path / "abs"
    assert s.run_dir == PROJECT_ROOT / ".streamrec"
    assert PROJECT_ROOT == Path(__file__).resolve().parents[2]
    moved = load_config(write(tmp_path, f"stack:\n  run_dir: {tmp_path / 'run'}\n"), environ={})
    assert moved.run_dir == tmp_path / "run"


def test_the_example_config_is_the_defaults() -> None:
    assert load_config(PROJECT_ROOT / "config.example.yaml", environ={}) == Settings()


def test_trainer_section_defaults_and_overrides(tmp_path: Path) -> None:
    t = Settings().trainer
    assert (t.gate_metric, t.gate_min_delta, t.min_new_events, t.holdout_fraction) == ("ndcg@10", 0.0, 1000, 0.2)
    s = load_config(write(tmp_path, "trainer:\n  gate_min_delta: -0.01\n  max_train_seconds: null\n"), environ={})
    assert s.trainer.gate_min_delta == -0.01 and s.trainer.max_train_seconds is None


def test_train_cli_passes_the_catalog_and_the_history_length(monkeypatch) -> None:
    """`streamrec train --dataset`: the data set's items feed the text tower; --max-len and --cold-exposure reach it."""
    import model_export.pipeline as pipeline_module
    from streamrec.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def spy(events, out_dir, *, name, seed, config, catalog):
        seen.update(n=len(events), max_len=config.model.max_len, exposure=config.cold_exposure, catalog=catalog)
        raise Stop

    monkeypatch.setattr(pipeline_module, "train_and_export_events", spy)
    with pytest.raises(Stop):
        main(["train", "--dataset", "ml-100k", "--max-events", "500", "--max-len", "20", "--cold-exposure", "0.5"])
    assert seen["n"] == 500 and seen["max_len"] == 20 and seen["exposure"] == 0.5
    assert len(seen["catalog"]) == 1682 and seen["catalog"]["1"]["title"].startswith("Toy Story")
