"""Kept for code written before the subpackage layout: `evoprune.export` moved to `evoprune.deploy.export`."""
from evoprune.deploy.export import MissingExtra, export, load_exported, sha256

__all__ = ["MissingExtra", "export", "load_exported", "sha256"]
