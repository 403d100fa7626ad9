"""Architecture search: the strategy API (ask/tell, evaluators, constraints, tables) and its
strategies; zero-cost proxies and ParZC; the ProxylessNAS supernet, data for the proxy task, the
search loop."""

from __future__ import annotations

from hwnas.data import ImageData, load_data
from hwnas.search.evaluators import (
    Evaluator,
    ParZCEvaluator,
    ParZCFreeEvaluator,
    ProxyEvaluator,
    TableEvaluator,
)
from hwnas.search.parzc import ParZC
from hwnas.search.proxy_table import ProxiesConfig, run_proxies
from hwnas.search.run import SearchConfig, run_search, train_arch
from hwnas.search.strategies import STRATEGIES, make_strategy
from hwnas.search.strategy import SearchResult, Strategy, Trial, run_strategy
from hwnas.search.supernet import MixedOp, SuperNet
from hwnas.search.tabular import StrategySearchConfig, run_strategy_search

__all__ = ["Evaluator", "ImageData", "MixedOp", "ParZC", "ParZCEvaluator", "ParZCFreeEvaluator",
           "ProxiesConfig", "ProxyEvaluator", "STRATEGIES", "SearchConfig", "SearchResult",
           "Strategy", "StrategySearchConfig", "SuperNet", "TableEvaluator", "Trial", "load_data",
           "make_strategy", "run_proxies", "run_search", "run_strategy", "run_strategy_search",
           "train_arch"]
