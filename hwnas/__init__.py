"""hwnas: hardware-aware latency modeling, neural architecture search and deployment."""

__version__ = "0.1.0"
