"""recplane: the machine-learning platform for recommender systems.

The front door is :class:`Client` (embedded or remote); dataset definitions are :class:`DatasetSpec`.
"""

import os

# Before torch loads: OpenMP threads that spin while they wait make every torch op crawl as soon as another
# process wants a core (measured on 2 cores under load: an MF step took 254 ms spinning, 4 ms sleeping).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recplane.client import Client
from recplane.config import Settings
from recplane.lake.spec import ColumnSpec, DatasetSpec

__version__ = "0.1.0"
__all__ = ["Client", "ColumnSpec", "DatasetSpec", "Settings", "__version__"]
