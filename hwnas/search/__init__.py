"""Architecture search: the strategy API (ask/tell, evaluators, constraints, tables) and its
strategies; the ProxylessNAS supernet, data for the proxy task, the search loop."""

from __future__ import annotations

from hwnas.data import ImageData, load_data
from hwnas.search.run import SearchConfig, run_search, train_arch
from hwnas.search.strategies import STRATEGIES, make_strategy
from hwnas.search.strategy import SearchResult, Strategy, Trial, run_strategy
from hwnas.search.supernet import MixedOp, SuperNet
from hwnas.search.tabular import StrategySearchConfig, run_strategy_search

__all__ = ["ImageData", "MixedOp", "STRATEGIES", "SearchConfig", "SearchResult", "Strategy",
           "StrategySearchConfig", "SuperNet", "Trial", "load_data", "make_strategy",
           "run_search", "run_strategy", "run_strategy_search", "train_arch"]
