"""Kept for code written before 0.2: `evoprune.export` moved to `evoprune.deploy.export`."""
from evoprune.deploy.export import MissingExtra, export, load_exported, sha256

__all__ = ["MissingExtra", "export", "load_exported", "sha256"]
