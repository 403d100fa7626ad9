"""Conversions of a torch module to each runtime's artifact (shared by backends and `hwnas export`)."""
