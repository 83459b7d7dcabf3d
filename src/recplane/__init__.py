"""recplane: the machine-learning platform for recommender systems.

The front door is :class:`Client` (embedded or remote); dataset definitions are :class:`DatasetSpec`.
"""

from recplane.client import Client
from recplane.config import Settings
from recplane.lake.spec import ColumnSpec, DatasetSpec

__version__ = "0.1.0"
__all__ = ["Client", "ColumnSpec", "DatasetSpec", "Settings", "__version__"]
