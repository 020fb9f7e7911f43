"""evoprune: compress neural networks by evolutionary search over structurally pruned subnets."""
from .config import Config, ConfigError, load_config
from .fitness import Fitness, build_fitness
from .genome import Genome
from .objectives import Objectives
from .run import Run, load_run
from .space import SearchSpace

__all__ = ["Config", "ConfigError", "Fitness", "Genome", "Objectives", "Run", "SearchSpace",
           "build_fitness", "load_config", "load_run"]
__version__ = "0.1.0"
