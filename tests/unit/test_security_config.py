"""How the security settings become broker properties, Redis ACL lines and printable status, without services."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from infra.kafka_broker import KafkaBroker, ScramCredentialError, _argfile_line
from infra.process import ServiceError
from infra.redis_server import AclUser, AclUserError
from infra.stack import _without_password, kafka_broker, redis_server
from serving.store import API_ACL_RULES, JOB_ACL_RULES
from streamrec.cli import _redis_users
from streamrec.config import Settings


def broker(**kw: object) -> KafkaBroker:
    return KafkaBroker(home=Path("/nonexistent"), jars_dir=Path("/nonexistent"), port=1, controller_port=2, **kw)  # type: ignore[arg-type]


def props(b: KafkaBroker) -> dict[str, str]:
    return dict(line.split("=", 1) for line in b._properties().splitlines())


def test_a_plain_broker_has_one_plaintext_client_listener() -> None:
    p = props(broker())
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2"
    assert "sasl.enabled.mechanisms" not in p and broker().client_config() == {}


def test_a_scram_broker_listens_with_sasl_only_and_identifies_as_its_first_user() -> None:
    b = broker(scram_users={"admin": "a pw=]", "app": "x"}, scram_mechanism="SCRAM-SHA-512")
    p = props(b)
    assert p["listeners"] == "SASL_PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2"
    assert p["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:1"
    assert p["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert p["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert p["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    assert p["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    for mech in ("scram-sha-256", "scram-sha-512"):
        assert p[f"listener.name.sasl_plaintext.{mech}.sasl.jaas.config"].endswith(
            'ScramLoginModule required username="admin" password="a pw=]";'
        )
    assert b.client_config() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "admin",
        "sasl_plain_password": "a pw=]",
    }


@pytest.mark.parametrize(
    "users", [{"admin": "a,b"}, {"admin": 'a"b'}, {"admin": "a\\b"}, {"admin": "a\nb"}, {"admin": ""}, {"a b": "x"}]
)
def test_scram_credentials_the_configuration_cannot_carry_are_refused(users: dict[str, str]) -> None:
    with pytest.raises(ScramCredentialError) as info:
        broker(scram_users=users)._properties()
    for password in users.values():
        if len(password) > 1:
            assert password not in str(info.value)


def test_java_argfile_lines_quote_and_escape() -> None:
    arg = 'SCRAM-SHA-256=[name=a,password="p w\\"]'
    assert _argfile_line(arg) == '"SCRAM-SHA-256=[name=a,password=\\"p w\\\\\\"]"\n'


def test_acl_lines_hold_a_hash_never_the_password() -> None:
    line = AclUser("streamrec-job", "s3cret", JOB_ACL_RULES).line()
    assert "s3cret" not in line
    assert line.startswith(f"user streamrec-job reset on #{hashlib.sha256(b's3cret').hexdigest()} resetchannels -@all")
    with pytest.raises(AclUserError):
        AclUser("default", "x", JOB_ACL_RULES).line()
    with pytest.raises(AclUserError):
        AclUser("bad name", "x", JOB_ACL_RULES).line()


def test_the_api_rules_grant_no_write_command_and_read_only_keys() -> None:
    granted = {w[1:] for w in API_ACL_RULES.split() if w.startswith("+")}
    assert granted == {"ping", "select", "get", "hmget", "hgetall"}
    assert all(w.startswith("%R~") for w in API_ACL_RULES.split() if "~" in w)
    assert {w[1:] for w in JOB_ACL_RULES.split() if w.startswith("+")} >= {"get", "set", "del", "hset", "hincrby"}
    assert "+@all" not in JOB_ACL_RULES and "~*" not in JOB_ACL_RULES.split()


def test_up_builds_acl_users_from_the_config() -> None:
    s = Settings.model_validate(
        {
            "stack": {"redis_password": "admin"},
            "redis": {"username": "streamrec-job", "password": "jp"},
            "api": {"redis_username": "streamrec-api", "redis_password": "ap"},
        }
    )
    users = _redis_users(s)
    assert [(u.name, u.password, u.rules) for u in users] == [
        ("streamrec-job", "jp", JOB_ACL_RULES),
        ("streamrec-api", "ap", API_ACL_RULES),
    ]
    assert redis_server(s, users).password == "admin"
    assert _redis_users(Settings()) == []
    same = s.model_copy(update={"api": s.api.model_copy(update={"redis_username": "streamrec-job"})})
    with pytest.raises(AclUserError, match="must differ"):
        _redis_users(same)


def test_up_starts_scram_only_for_sasl_plaintext_with_credentials() -> None:
    k = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "app"}
    b = kafka_broker(Settings.model_validate({"kafka": {**k, "sasl_password": "pw"}}))
    assert b.scram_users == {"app": "pw"} and b.scram_mechanism == "SCRAM-SHA-256"
    assert kafka_broker(Settings()).scram_users == {}
    with pytest.raises(ServiceError, match="sasl_password"):
        kafka_broker(Settings.model_validate({"kafka": k}))
    for bad in ({**k, "sasl_mechanism": "PLAIN"}, {**k, "security_protocol": "SASL_SSL"}):
        with pytest.raises(ServiceError, match="SCRAM"):
            kafka_broker(Settings.model_validate({"kafka": {**bad, "sasl_password": "pw"}}))


def test_status_urls_never_show_a_password() -> None:
    assert _without_password("redis://u:s3cret@127.0.0.1:6379/0") == "redis://u:***@127.0.0.1:6379/0"
    assert _without_password("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert _without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
