"""The model zoo: retrieval, sequential, ranking and multi-task models, and embedding tables (torch only)."""

from recplane.models.base import Batch, ModelSignature, RankingModel, RecModel, RetrievalModel
from recplane.models.dcn import DCNv2, DCNv2Config
from recplane.models.deepfm import DeepFM, DeepFMConfig
from recplane.models.din import DIN, DINConfig
from recplane.models.dynamic_embedding import DynamicEmbedding, DynamicTableStats, attach_dynamic_tables
from recplane.models.embeddings import EmbeddingTable, FixedEmbedding, HashedEmbedding
from recplane.models.features import DenseField, FeatureLayer, SparseField
from recplane.models.lightgcn import LightGCN
from recplane.models.mf import MF, bpr_loss
from recplane.models.mmoe import MMoE, MMoEConfig
from recplane.models.moe import SparseMoEConfig, SparseMoERanker
from recplane.models.negatives import InteractionSet, NegativeSampler, item_log_frequency
from recplane.models.sasrec import SASRec, SASRecConfig
from recplane.models.two_tower import TwoTower, TwoTowerConfig, in_batch_softmax_loss

__all__ = [
    "DIN",
    "MF",
    "Batch",
    "DCNv2",
    "DCNv2Config",
    "DINConfig",
    "DeepFM",
    "DeepFMConfig",
    "DenseField",
    "DynamicEmbedding",
    "DynamicTableStats",
    "EmbeddingTable",
    "FeatureLayer",
    "FixedEmbedding",
    "HashedEmbedding",
    "InteractionSet",
    "LightGCN",
    "MMoE",
    "MMoEConfig",
    "ModelSignature",
    "NegativeSampler",
    "RankingModel",
    "RecModel",
    "RetrievalModel",
    "SASRec",
    "SASRecConfig",
    "SparseField",
    "SparseMoEConfig",
    "SparseMoERanker",
    "TwoTower",
    "TwoTowerConfig",
    "attach_dynamic_tables",
    "bpr_loss",
    "in_batch_softmax_loss",
    "item_log_frequency",
]
