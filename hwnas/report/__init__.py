"""`hwnas report`: a self-contained HTML page of a profile, a search run and its exports."""

from hwnas.report.page import build_report

__all__ = ["build_report"]
