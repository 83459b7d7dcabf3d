"""Tuned defaults of every zoo model for the ml-100k leaderboard, in one place.

The four models RecBole also has (``mf`` ≈ BPR, ``lightgcn``, ``sasrec``, ``deepfm``) mirror RecBole 1.2.1's
own settings (see ``benchmarks/peers/recbole/README.md`` and the ``protocol`` object ``run_recbole.py``
prints): embedding 64, batch 2048, Adam at 1e-3, one uniform negative for BPR; LightGCN 2 layers with 1e-5
regularisation; SASRec 2 layers x 2 heads, hidden 64, inner 256, dropout 0.5, 50 items, CE loss; DeepFM
embedding 10, MLP 128x3, dropout 0.2, label ``rating >= 4`` over user_id, item_id, age, gender, occupation,
release_year and genres. Where a recplane parameter has no RecBole twin the choice is explained beside it.

Max epochs are per model so that the full run fits its time budget (about 30 minutes on 2 cores): each is at
or past the epoch where the valid metric stopped improving in probe runs, and early stopping (patience 10 on the
protocol's valid metric, RecBole's ``stopping_step``) usually ends the run first. The RecBole peer gets the
same max epochs and patience, except SASRec (one RecBole SASRec epoch takes ~3.5 minutes here).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

SEEDS = (2020, 2021, 2022)  # 2020 is RecBole's default seed; the split is the protocol's, the same for every seed
PATIENCE = 10  # RecBole's stopping_step
THREADS = 1  # torch threads per run, as the peer (run_recbole.py --threads 1)
PEER_SASREC_EPOCHS = 2  # RecBole SASRec trains every prefix: ~3.5 min per epoch at one thread on this machine
QUICK_EPOCHS = 1
QUALITY_TOLERANCE_FLOOR = 0.002  # quality_ok allows recplane one seed-std (at least this) below RecBole

# Item text for the multimodal rows: title, genres and release year, one sentence per movie (render_texts).
TEXT_COLUMNS = ("title", "genres", "release_year")
TEXT_FEATURE = "text_embedding"
TEXT_MODELS = ("two_tower", "deepfm")

# RecBole's context-aware ml-100k fields (the peer's resolved feature_fields), read from the users/items tables.
USER_FIELDS = ("age", "gender", "occupation")
ITEM_FIELDS = ("release_year", "genres")

Features = Literal["none", "context"]


class ModelConfig(NamedTuple):
    """One model's leaderboard settings: ``params`` go to ``TrainConfig.params``, the rest to ``TrainConfig``."""

    model: str
    metric: str  # the leaderboard metric (ndcg@10 or auc); the trainer early-stops on the protocol's valid metric
    params: dict[str, Any]
    max_epochs: int
    lr: float = 1e-3
    batch_size: int = 2048
    features: Features = "none"
    peer: str | None = None  # the RecBole model this one mirrors
    note: str = ""

    def train_settings(self, *, epochs: int, seed: int) -> dict[str, Any]:
        """Keyword arguments of ``TrainConfig`` for one run."""
        return {
            "model": self.model,
            "params": self.params,
            "epochs": epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": seed,
            "patience": PATIENCE,
            "negatives": "uniform",
            "num_negatives": 1,
            "device": "cpu",
            "precision": "fp32",
        }


# RecBole initialises BPR/LightGCN embeddings with Xavier (normal/uniform): std sqrt(2 / (rows + 64)) is 0.045
# for ml-100k's 944 user rows and 0.034 for its 1,683 item rows; recplane's tables take one std, 0.04.
XAVIER_LIKE_STD = 0.04

MODELS: dict[str, ModelConfig] = {
    config.model: config
    for config in (
        ModelConfig(
            "mf",
            "ndcg@10",
            # RecBole's BPR has no regularisation term.
            {"dim": 64, "l2": 0.0, "init_std": XAVIER_LIKE_STD},
            max_epochs=100,
            peer="BPR",
        ),
        ModelConfig(
            "lightgcn",
            "ndcg@10",
            {"dim": 64, "num_layers": 2, "l2": 1e-5, "init_std": XAVIER_LIKE_STD},
            max_epochs=100,
            peer="LightGCN",
        ),
        ModelConfig(
            "two_tower",
            "ndcg@10",
            # recplane's defaults: 64-d ids, towers 128-64, in-batch softmax at temperature 0.05 with logQ.
            {},
            max_epochs=12,  # best valid mrr@10 at epoch 5 in probes, then it overfits
        ),
        ModelConfig(
            "sasrec",
            "ndcg@10",
            {
                "max_seq_length": 50,
                "hidden_size": 64,
                "n_layers": 2,
                "n_heads": 2,
                "inner_size": 256,
                "hidden_dropout_prob": 0.5,
                "attn_dropout_prob": 0.5,
                "hidden_act": "gelu",
                "layer_norm_eps": 1e-12,
                "initializer_range": 0.02,
                "loss_type": "CE",
            },
            max_epochs=40,  # best at ~30 in probes; gains past 20 are within seed noise
            # RecBole's batch of 2048 is 2048 prefixes, one target each; a recplane row is a user's whole
            # sequence (~41 targets on ml-100k), so 48 users per batch give RecBole's ~2,000 targets per step.
            batch_size=48,
            peer="SASRec",
            note="batch 48 users ~ 2,000 target positions per step, as RecBole's 2048 prefixes",
        ),
        ModelConfig(
            "deepfm",
            "auc",
            {"embedding_size": 10, "mlp_hidden_size": [128, 128, 128], "dropout_prob": 0.2},
            max_epochs=30,  # best at ~13 in probes
            features="context",
            peer="DeepFM",
        ),
        # recplane's defaults (RecBole's DCNV2/DIN yaml); DCN peaks at ~12 epochs, DIN at ~4 then overfits.
        ModelConfig("dcn", "auc", {}, max_epochs=12, features="context"),
        ModelConfig("din", "auc", {}, max_epochs=8, features="context"),
        ModelConfig(
            "mmoe",
            "auc",
            {},
            max_epochs=12,
            lr=5e-3,  # at 1e-3 the click auc still climbed at 20 epochs; 5e-3 beats that by epoch 7
            features="context",
            note="auc is the click task (observed vs sampled unobserved items); like_auc compares with deepfm's auc",
        ),
        ModelConfig(
            "moe",
            "auc",
            {},
            max_epochs=15,
            lr=5e-3,  # at 1e-3 it needed ~30 epochs for the auc 5e-3 reaches at ~10
            features="context",
            note="auc is the click task (observed vs sampled unobserved items); like_auc compares with deepfm's auc",
        ),
    )
}

RETRIEVAL_EXTRAS = ("recall@10", "mrr@10", "hit@10", "precision@10")
RANKING_EXTRAS = ("gauc", "logloss", "like_auc", "like_gauc", "like_logloss")
