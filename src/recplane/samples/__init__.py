"""Sample data: MovieLens loaders and a synthetic interaction generator, as Arrow tables and Parquet."""

from recplane.samples.movielens import (
    MovieLensFormatError,
    MovieLensNotFound,
    MovieLensSource,
    MovieLensTables,
    find_movielens_source,
    load_movielens_100k,
)
from recplane.samples.synthetic import (
    SyntheticFiles,
    SyntheticSpec,
    generate_synthetic,
    iter_synthetic_batches,
    synthetic_items,
    synthetic_users,
)

__all__ = [
    "MovieLensFormatError",
    "MovieLensNotFound",
    "MovieLensSource",
    "MovieLensTables",
    "SyntheticFiles",
    "SyntheticSpec",
    "find_movielens_source",
    "generate_synthetic",
    "iter_synthetic_batches",
    "load_movielens_100k",
    "synthetic_items",
    "synthetic_users",
]
