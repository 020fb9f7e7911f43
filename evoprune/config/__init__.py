"""Typed configuration: frozen sections with defaults (the embedded default run), YAML loading, overrides, rules."""
from evoprune.config.load import apply_overrides, config_from_dict, load_config, parse_override, read_yaml, save_config
from evoprune.config.schema import (INT_MAX, Config, ConfigError, DataConfig, DistillConfig, EvaluatorConfig,
                                    FitnessConfig, ParentConfig, PopulationConfig, SearchConfig, SpaceConfig, short)
from evoprune.config.streams import stream_seed
from evoprune.config.vocab import CRITERIA, CROSSOVERS, FEATURE_KD_LOSSES, KD_LOSSES, LOGIT_KD_LOSSES

__all__ = ["CRITERIA", "CROSSOVERS", "Config", "ConfigError", "DataConfig", "DistillConfig", "EvaluatorConfig",
           "FEATURE_KD_LOSSES", "FitnessConfig", "INT_MAX", "KD_LOSSES", "LOGIT_KD_LOSSES", "ParentConfig",
           "PopulationConfig", "SearchConfig", "SpaceConfig", "apply_overrides", "config_from_dict", "load_config",
           "parse_override", "read_yaml", "save_config", "short", "stream_seed"]
