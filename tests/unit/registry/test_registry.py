"""The model registry on SQLite: registering from runs and folders, resolving, aliases and their history, teams."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from tests.fixtures.registry import RegistryHome, default_metrics, finished_run, open_home

from recplane.auth import ADMIN, Principal
from recplane.config import Settings
from recplane.errors import Forbidden, InvalidInput, NotFound
from recplane.lake import DatasetSpec
from recplane.training.runs import TRAINING_SET_FILE, NewRun

ADS, SEARCH = Principal(team="ads"), Principal(team="search")


def test_a_version_from_a_run_carries_its_files_signature_params_metrics_and_lineage(
    home: RegistryHome, model_folder: Path
) -> None:
    run = finished_run(home.runs, model_folder, lr=0.02, tags={"purpose": "test"})
    version = home.registry.register("mf-movies", run_id=run.id, description="first try", tags={"owner": "me"})

    assert (version.name, version.version, version.team, version.run_id) == ("mf-movies", 1, "default", run.id)
    assert (version.kind, version.model_class) == ("retrieval", "recplane.models.mf.MF")
    assert [spec["name"] for spec in version.signature["inputs"]] == ["user_id"]
    assert version.signature["form"] == "torchscript" and version.signature["model"]["outputs"]
    assert version.params["lr"] == 0.02 and version.params["params"] == {"dim": 8}
    assert "checkpoint_dir" not in version.params
    assert version.metrics["test.recall@10"] == 0.2 and version.metrics["best_valid"] == 0.2
    assert version.metrics["valid_metric"] == "recall@10" and version.metrics["final_loss"] == 0.5
    lineage = version.lineage
    assert (lineage.run_id, lineage.run_name, lineage.dataset, lineage.dataset_version) == (
        run.id,
        run.name,
        "ratings",
        3,
    )
    assert lineage.recplane_version == run.recplane_version and lineage.git_sha == run.git_sha
    assert lineage.source_uri == str(Path(run.artifacts_uri) / "model")
    assert version.artifact_uri == str(home.settings.artifacts_root / "models" / "mf-movies" / "1")
    assert version.description == "first try" and version.tags == {"owner": "me"}
    assert version.created_by == "admin" and version.created_at.tzinfo is not None
    copied = sorted(p.name for p in Path(version.artifact_uri).iterdir())
    assert copied == sorted(p.name for p in model_folder.iterdir())


def test_a_registered_version_survives_deleting_its_run_and_still_predicts(
    home: RegistryHome, model_folder: Path
) -> None:
    from recplane.training.export import load_exported

    run = finished_run(home.runs, model_folder)
    version = home.registry.register("mf", run_id=run.id)
    shutil.rmtree(run.artifacts_uri)
    folder = home.registry.local_path(home.registry.resolve("mf", 1))
    model = load_exported(folder)
    assert model.query_vectors({"user_id": [1, 2]}).shape[0] == 2
    assert folder == Path(version.artifact_uri)


def test_versions_count_up_and_resolve_by_number_text_and_latest(home: RegistryHome, model_folder: Path) -> None:
    runs = [finished_run(home.runs, model_folder, metrics=default_metrics(recall)) for recall in (0.1, 0.2, 0.3)]
    versions = [home.registry.register("mf", run_id=run.id) for run in runs]
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.version for v in home.registry.list_versions("mf")] == [3, 2, 1]
    assert home.registry.resolve("mf").version == 3
    assert home.registry.resolve("mf", "latest").run_id == runs[2].id
    assert home.registry.resolve("mf", 2).run_id == runs[1].id
    assert home.registry.resolve("mf", "1").run_id == runs[0].id
    assert home.registry.get_version("mf", 1).metrics["test.recall@10"] == 0.1
    model = home.registry.get_model("mf")
    assert (model.latest_version, model.version_count, model.aliases, model.team) == (3, 3, {}, "default")


def test_bare_folders_register_with_only_the_lineage_they_are_given(home: RegistryHome, model_folder: Path) -> None:
    version = home.registry.register(
        "imported",
        artifact_uri=str(model_folder),
        params={"dim": 8},
        metrics={"test.recall@10": 0.25, "offline_auc": float("nan")},
        lineage={"dataset": "ratings", "dataset_version": 7, "feature_views": {"user_stats": 2}},
        model_description="trained elsewhere",
    )
    assert version.run_id is None and version.params == {"dim": 8}
    assert version.metrics == {"test.recall@10": 0.25, "offline_auc": None}
    assert version.lineage.dataset_version == 7 and version.lineage.feature_views == {"user_stats": 2}
    assert version.lineage.run_id is None and version.lineage.git_sha is None
    assert version.lineage.source_uri == str(model_folder)
    assert home.registry.get_model("imported").description == "trained elsewhere"
    with pytest.raises(InvalidInput, match="Known fields"):
        home.registry.register("imported", artifact_uri=str(model_folder), lineage={"datasett": "typo"})


def test_registering_what_is_not_a_finished_exported_model_says_what_to_do(
    home: RegistryHome, model_folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=r"run_id .* or artifact_uri"):
        home.registry.register("mf")
    running = home.runs.create(NewRun(model="mf", config={"model": "mf"}))
    with pytest.raises(InvalidInput, match="is running; only finished runs"):
        home.registry.register("mf", run_id=running.id)
    no_export = finished_run(home.runs, None)
    with pytest.raises(InvalidInput, match=rf"exported model folder of run {no_export.id} .* no manifest.json"):
        home.registry.register("mf", run_id=no_export.id)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"holds no manifest\.json"):
        home.registry.register("mf", artifact_uri=str(tmp_path / "empty"))
    with pytest.raises(NotFound, match="no training run 'nope'"):
        home.registry.register("mf", run_id="nope")
    with pytest.raises(InvalidInput, match="not valid"):
        home.registry.register("MF models", artifact_uri=str(model_folder))
    assert home.registry.list_models() == []
    assert not (home.settings.artifacts_root / "models" / "mf").exists()


def test_unknown_models_versions_and_aliases_are_named_in_the_error(home: RegistryHome, model_folder: Path) -> None:
    with pytest.raises(NotFound, match="no registered model 'ghost'"):
        home.registry.resolve("ghost")
    home.registry.register("mf", artifact_uri=str(model_folder))
    home.registry.set_alias("mf", "candidate", 1)
    with pytest.raises(NotFound, match="no version 9; its newest is 1"):
        home.registry.resolve("mf", 9)
    with pytest.raises(NotFound, match=r"no alias 'production'; its aliases are \['candidate'\]"):
        home.registry.resolve("mf", "production")
    with pytest.raises(InvalidInput):
        home.registry.resolve("mf", 0)
    with pytest.raises(InvalidInput):
        home.registry.set_alias("mf", "latest", 1)
    with pytest.raises(NotFound, match="no version 5"):
        home.registry.set_alias("mf", "production", 5)


def test_alias_moves_are_kept_with_actor_versions_time_and_reason(home: RegistryHome, model_folder: Path) -> None:
    for _ in range(3):
        home.registry.register("mf", artifact_uri=str(model_folder))
    created = home.registry.set_alias("mf", "production", 1, reason="first model", principal=Principal(team="default"))
    assert (created.from_version, created.to_version, created.actor) == (None, 1, "team:default")
    home.registry.set_alias("mf", "candidate", 3, reason="new architecture")
    before_move = datetime.now(UTC)
    time.sleep(0.01)
    moved = home.registry.set_alias("mf", "production", 2, reason="better recall")
    assert (moved.from_version, moved.to_version, moved.reason, moved.actor) == (1, 2, "better recall", "admin")
    assert home.registry.resolve("mf", "production").version == 2
    assert home.registry.set_alias("mf", "production", 2).id == moved.id  # already there: no new event
    promoted = home.registry.set_alias("mf", "production", "candidate", reason="candidate won the A/B test")
    assert (promoted.from_version, promoted.to_version) == (2, 3)
    deleted = home.registry.delete_alias("mf", "candidate", reason="promoted")
    assert (deleted.from_version, deleted.to_version) == (3, None)

    history = home.registry.alias_history("mf")
    assert [(e.alias, e.from_version, e.to_version) for e in history] == [
        ("candidate", 3, None),
        ("production", 2, 3),
        ("production", 1, 2),
        ("candidate", None, 3),
        ("production", None, 1),
    ]
    assert [e.to_version for e in home.registry.alias_history("mf", "production")] == [3, 2, 1]
    assert home.registry.get_model("mf").aliases == {"production": 3}
    assert home.registry.get_alias("mf", "production").version == 3
    assert home.registry.get_alias("mf", "production", at=before_move).version == 1
    assert home.registry.get_alias("mf", "candidate").version is None
    assert home.registry.get_alias("mf", "production", at=created.at - timedelta(seconds=1)).version is None
    with pytest.raises(NotFound, match="no alias 'candidate'"):
        home.registry.delete_alias("mf", "candidate")


def test_a_team_sees_and_changes_only_its_own_models(home: RegistryHome, model_folder: Path) -> None:
    ads_run = finished_run(home.runs, model_folder, principal=ADS, team="ads")
    version = home.registry.register("ads-ranker", run_id=ads_run.id, principal=ADS)
    assert version.team == "ads" and version.created_by == "team:ads"
    home.registry.register("search-mf", artifact_uri=str(model_folder), principal=SEARCH)
    admin_owned = home.registry.register("shared", run_id=ads_run.id)
    assert admin_owned.team == "ads"  # the administrator's registration belongs to the run's team

    assert [m.name for m in home.registry.list_models(principal=ADS)] == ["ads-ranker", "shared"]
    assert [m.name for m in home.registry.list_models(principal=SEARCH)] == ["search-mf"]
    assert [m.name for m in home.registry.list_models()] == ["ads-ranker", "search-mf", "shared"]
    with pytest.raises(Forbidden, match="belongs to team 'ads'"):
        home.registry.resolve("ads-ranker", principal=SEARCH)
    with pytest.raises(Forbidden):
        home.registry.list_versions("ads-ranker", principal=SEARCH)
    with pytest.raises(Forbidden):
        home.registry.set_alias("ads-ranker", "production", 1, principal=SEARCH)
    with pytest.raises(Forbidden):
        home.registry.alias_history("ads-ranker", principal=SEARCH)
    with pytest.raises(Forbidden):
        home.registry.register("ads-ranker", artifact_uri=str(model_folder), principal=SEARCH)
    with pytest.raises(Forbidden):
        home.registry.register("mine", run_id=ads_run.id, principal=SEARCH)
    with pytest.raises(Forbidden):
        home.registry.register("other", artifact_uri=str(model_folder), team="ads", principal=SEARCH)
    with pytest.raises(InvalidInput, match="belongs to team 'ads'"):
        home.registry.register("ads-ranker", artifact_uri=str(model_folder), team="search")
    assert home.registry.list_versions("ads-ranker", principal=ADS)[0].version == 1


def test_concurrent_registrations_get_distinct_numbers_and_whole_folders(
    home: RegistryHome, model_folder: Path
) -> None:
    errors: list[BaseException] = []
    versions: list[int] = []

    def register_one() -> None:
        try:
            versions.append(home.registry.register("busy", artifact_uri=str(model_folder)).version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(versions) == list(range(1, 9))
    for version in home.registry.list_versions("busy"):
        assert (home.registry.local_path(version) / "manifest.json").is_file()
    assert not list((home.settings.artifacts_root / "models" / "busy" / ".staging").iterdir())


def test_concurrent_alias_moves_leave_a_gapless_history(home: RegistryHome, model_folder: Path) -> None:
    for _ in range(4):
        home.registry.register("mf", artifact_uri=str(model_folder))
    home.registry.set_alias("mf", "production", 1)
    errors: list[BaseException] = []

    def move(target: int) -> None:
        try:
            for _ in range(5):
                home.registry.set_alias("mf", "production", target, reason=f"to {target}")
                home.registry.set_alias("mf", "production", 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=move, args=(target,)) for target in (2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    events = list(reversed(home.registry.alias_history("mf", "production")))
    for before, after in itertools.pairwise(events):
        assert after.from_version == before.to_version  # every move starts where the previous one ended
    assert events[-1].to_version == home.registry.resolve("mf", "production").version


def test_lineage_names_the_feature_views_of_a_training_set_dataset(home: RegistryHome, model_folder: Path) -> None:
    spec = DatasetSpec.model_validate({"name": "clicks_ts", "columns": {"user_id": "int64", "item_id": "int64"}})
    home.datasets.create(spec, principal=ADMIN)
    training_set = {"feature_service": {"name": "ranker", "version": 2}, "feature_views": {"user_stats": 3}}
    table = pa.table({"user_id": pa.array([1], pa.int64()), "item_id": pa.array([2], pa.int64())})
    written = home.datasets.replace("clicks_ts", table, principal=ADMIN, metadata={"training_set": training_set})
    run = finished_run(
        home.runs,
        model_folder,
        dataset="clicks_ts",
        dataset_version=written,
        tags={"user_features": "users", "user_features_version": "4"},
    )
    lineage = home.registry.register("ranker", run_id=run.id).lineage
    assert lineage.feature_views == {"user_stats": 3}
    assert lineage.feature_service == "ranker" and lineage.training_set == training_set
    assert (lineage.user_features, lineage.user_features_version) == ("users", 4)


def test_lineage_of_a_run_trained_on_a_training_set_comes_from_its_folder(
    home: RegistryHome, model_folder: Path
) -> None:
    run = finished_run(home.runs, model_folder, tags={"feature_service": "ranker@2"})
    training_set = {"feature_service": {"name": "ranker", "version": 2}, "feature_views": {"user_stats": 3, "items": 1}}
    (home.runs.directory(run.id) / TRAINING_SET_FILE).write_text(json.dumps(training_set))
    lineage = home.registry.register("ranker", run_id=run.id).lineage
    assert lineage.feature_views == {"user_stats": 3, "items": 1} and lineage.feature_service == "ranker"
    assert lineage.training_set == training_set


def test_object_storage_versions_are_downloaded_once_into_the_cache(tmp_path: Path, model_folder: Path) -> None:
    import fsspec

    root = f"memory://registry-{tmp_path.name}"
    opened = open_home(Settings(home=tmp_path / "home", registry_uri=root))
    try:
        version = opened.registry.register("mf", artifact_uri=str(model_folder))
        assert version.artifact_uri == f"{root}/mf/1"
        local = opened.registry.local_path(version)
        assert local.is_relative_to((tmp_path / "home" / "cache").resolve())
        assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in model_folder.iterdir())
        fsspec.filesystem("memory").rm(f"{root}/mf/1", recursive=True)
        assert opened.registry.local_path(version) == local  # served from the cache, not downloaded again
        with pytest.raises(InvalidInput, match=r"no manifest\.json"):
            opened.registry.register("mf", artifact_uri=f"{root}/nothing-here")
    finally:
        opened.catalog.close()
