"""The folder model registry: publish, list, promote, rollback, refusal of bad artifacts."""

import json
import shutil
from pathlib import Path

import pytest

from model_export.artifact.contract import CONTRACT_FILE, ITEMS_FILE, load_contract
from model_export.artifact.export import export_artifact
from model_export.artifact.registry import STATE_FILE, Registry
from model_export.errors import ArtifactError, RegistryError
from model_export.model import ModelConfig, SASRec


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = SASRec(5, ModelConfig(max_len=4, d=8, n_blocks=1)).eval()
    out = tmp_path_factory.mktemp("art") / "a"
    metrics = {"loo": {"streamrec": {"recall@10": 0.5}}}
    return export_artifact(
        model, list("abcde"), out, version="walk-1", metrics=metrics, train_data={"min_ts": 1, "max_ts": 2}
    )


def test_empty_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    assert reg.list_versions() == [] and reg.current() is None
    with pytest.raises(RegistryError, match="no version published"):
        reg.promote("latest")
    with pytest.raises(RegistryError, match="roll back"):
        reg.rollback()


def test_publish_list_promote_rollback(artifact: Path, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    assert [reg.publish(artifact) for _ in range(3)] == ["v0001", "v0002", "v0003"]
    assert load_contract(reg.path("v0002")).model_version == "v0002"
    listed = reg.list_versions()
    assert [v["version"] for v in listed] == ["v0001", "v0002", "v0003"]
    assert set(listed[0]) == {"version", "path", "parent", "metrics", "promoted"}
    assert listed[0]["metrics"]["loo"]["streamrec"]["recall@10"] == 0.5 and not any(
        v["promoted"] for v in listed
    )

    assert reg.promote("v0001") == "v0001"
    assert reg.promote("latest") == "v0003"
    assert reg.current() == "v0003"
    assert [v["promoted"] for v in reg.list_versions()] == [False, False, True]
    assert reg.rollback() == "v0001" and reg.current() == "v0001"
    with pytest.raises(RegistryError):
        reg.rollback()
    assert [(h["action"], h["version"]) for h in reg.history()] == [
        ("promote", "v0001"),
        ("promote", "v0003"),
        ("rollback", "v0001"),
    ]
    # the state file is plain JSON, no temp files left behind
    assert json.loads((reg.root / STATE_FILE).read_text())["promoted"] == ["v0001"]
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".")]
    assert Registry(reg.root).current() == "v0001"


def test_unknown_version(artifact: Path, tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.publish(artifact)
    with pytest.raises(RegistryError, match="no version 'v0042'"):
        reg.promote("v0042")


def test_refuses_a_corrupted_artifact(artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in artifact.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / ITEMS_FILE).write_text('[null, "a", "b", "c", "d", "z"]')
    reg = Registry(tmp_path / "models")
    with pytest.raises(ArtifactError):
        reg.publish(bad)
    assert reg.versions() == []
    # corruption after publish blocks promotion
    v = reg.publish(artifact)
    (reg.path(v) / CONTRACT_FILE).write_text("{")
    with pytest.raises(ArtifactError):
        reg.promote(v)


def test_cli_refuses_corrupt_or_incompatible_artifacts_with_exit_2(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamrec.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  registry_dir: {tmp_path / 'models'}\n")

    def run(*args: str) -> tuple[int, str]:
        code = main(["--config", str(config), "models", *args])
        return code, capsys.readouterr().err

    corrupt = tmp_path / "corrupt"
    shutil.copytree(artifact, corrupt)
    (corrupt / ITEMS_FILE).write_text('[null, "a", "b", "c", "d", "z"]')
    code, err = run("register", str(corrupt))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: refused: invalid model artifact") and "items.json does not match its sha256" in err

    incompatible = tmp_path / "incompatible"
    shutil.copytree(artifact, incompatible)
    contract = json.loads((incompatible / CONTRACT_FILE).read_text())
    (incompatible / CONTRACT_FILE).write_text(json.dumps({**contract, "embedding_dim": 9}))
    code, err = run("register", str(incompatible))
    assert code == 2 and "inputs/outputs" in err and err.count("\n") == 1
    assert Registry(tmp_path / "models").versions() == []

    assert run("register", str(artifact)) == (0, "")
    (tmp_path / "models" / "v0001" / ITEMS_FILE).write_text("[]")
    code, err = run("promote", "v0001")
    assert code == 2 and "v0001: items.json does not match its sha256" in err
    assert Registry(tmp_path / "models").current() is None
