"""Architecture search: the ProxylessNAS supernet, data for the proxy task, the search loop."""

from __future__ import annotations

from hwnas.data import ImageData, load_data
from hwnas.search.run import SearchConfig, run_search, train_arch
from hwnas.search.supernet import MixedOp, SuperNet

__all__ = ["ImageData", "MixedOp", "SearchConfig", "SuperNet", "load_data", "run_search",
           "train_arch"]
