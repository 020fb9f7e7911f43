"""Typed configuration: defaults (the embedded default run), YAML loading, overrides, validation."""
from evoprune.config.schema import (CRITERIA, Config, ConfigError, DataConfig, DistillConfig, EvaluatorConfig, FitnessConfig, INT_MAX, KD_LOSSES, ParentConfig, PopulationConfig, SearchConfig, SpaceConfig, apply_overrides, config_from_dict, load_config, parse_override, read_yaml, save_config, short)

__all__ = ["CRITERIA", "Config", "ConfigError", "DataConfig", "DistillConfig", "EvaluatorConfig", "FitnessConfig", "INT_MAX", "KD_LOSSES", "ParentConfig", "PopulationConfig", "SearchConfig", "SpaceConfig", "apply_overrides", "config_from_dict", "load_config", "parse_override", "read_yaml", "save_config", "short"]
