"""End-to-end: `kedro run --pipeline text_prototype_kb` with a tiny random CLIP, and without a checkpoint."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from project_files import latest_version
from tiny_foundation import CLIP_EMBED_DIM, write_tiny_clip

from wsss_project.errors import UserInputError
from wsss_project.foundation.clip import CHECKPOINT_PARAM, encode_texts, load_clip

PIPELINE = "text_prototype_kb"
CLASSES = ["building", "tree", "car"]
N_PROTOTYPES, TOP_K, WEIGHT = 5, 2, 0.5



def _run(project: Path, runtime_params: dict) -> None:
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime_params) as session:
        session.run(pipeline_names=[PIPELINE])


def test_without_a_clip_checkpoint_the_run_stops_before_any_node_naming_the_parameter(project_copy):
    with pytest.raises(UserInputError, match=f"`{CHECKPOINT_PARAM}` is not set"):
        _run(project_copy, {"classes": CLASSES})
    assert not (project_copy / "data").exists(), "a node ran"


def test_a_class_without_descriptions_names_the_file(project_copy, tmp_path):
    config, checkpoint = write_tiny_clip(tmp_path)
    params = {"classes": ["building", "volcano"],
              "text_prototype_kb": {"clip": {"model_name": str(config), "checkpoint": str(checkpoint)}}}
    with pytest.raises(UserInputError, match=r"conf/base/class_descriptions.yml .* \['volcano'\]"):
        _run(project_copy, params)


def test_the_pipeline_builds_the_knowledge_base_prototypes_and_figure(project_copy, tmp_path):
    config, checkpoint = write_tiny_clip(tmp_path)
    params = {
        "classes": CLASSES,
        "text_prototype_kb": {"clip": {"model_name": str(config), "checkpoint": str(checkpoint)},
                              "n_prototypes": N_PROTOTYPES, "top_k": TOP_K, "enrichment_weight": WEIGHT},
    }
    _run(project_copy, params)
    data = project_copy / "data"

    # The knowledge base: every description of the run's classes, once, with its CLIP embedding.
    shipped = yaml.safe_load((project_copy / "conf" / "base" / "class_descriptions.yml").read_text())["classes"]
    kb = pd.read_parquet(latest_version(data / "02_intermediate" / "text_knowledge_base.parquet"))
    assert list(kb["class"].unique()) == CLASSES
    for name in CLASSES:
        assert kb.loc[kb["class"] == name, "description"].tolist() == shipped[name]["descriptions"]
    embeddings = np.stack(kb["embedding"].to_numpy())
    assert embeddings.shape == (len(kb), CLIP_EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    bundle = load_clip(str(config), checkpoint, "cpu")
    np.testing.assert_allclose(embeddings[:3], encode_texts(bundle, kb["description"][:3].tolist(), 8).numpy(),
                               atol=1e-6)

    # B centroids gathering every description once.
    centroids = pd.read_parquet(latest_version(data / "02_intermediate" / "text_prototype_centroids.parquet"))
    assert centroids["prototype"].tolist() == list(range(N_PROTOTYPES))
    assert centroids["n_descriptions"].sum() == len(kb)

    # One enriched embedding per class: eq. 4 from the saved t_c, prototypes and weights.
    prototypes = pd.read_parquet(latest_version(data / "02_intermediate" / "text_prototypes.parquet"))
    assert prototypes["class"].tolist() == CLASSES
    a = np.stack(centroids["embedding"].to_numpy())
    for row in prototypes.itertuples():
        assert row.template == f"an overhead satellite image of {row._1}"
        ids, weights = np.asarray(row.prototype_ids), np.asarray(row.prototype_weights)
        assert len(ids) == TOP_K and weights.sum() == pytest.approx(1.0)
        expected = np.asarray(row.base_embedding) + WEIGHT * weights @ a[ids]
        np.testing.assert_allclose(row.embedding, expected, atol=1e-6)
    np.testing.assert_allclose(
        np.stack(prototypes["base_embedding"].to_numpy()),
        encode_texts(bundle, prototypes["template"].tolist(), 8).numpy(), atol=1e-6)

    # The figure, and a copy as an artifact of the run's MLflow run.
    figure = data / "08_reporting" / "text_prototypes.png"
    assert figure.stat().st_size > 0
    mlflow.set_tracking_uri(f"sqlite:///{project_copy / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["wsss_project"]).iloc[0]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(run.run_id)]
    assert "text_prototypes.png" in artifacts
