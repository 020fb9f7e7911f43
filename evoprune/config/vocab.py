"""The names a config may use for criteria, KD losses and crossovers: defined once, implemented elsewhere."""
from __future__ import annotations

# torch-pruning importance criteria (evoprune.pruning.importance implements each)
CRITERIA = ("l1", "l2", "bn_scale", "taylor", "lamp", "fpgm", "random")
# KD losses (evoprune.fitness.losses implements each); the batched evaluator supports the logit ones,
# the feature ones need the networks' inner feature maps (sequential only)
LOGIT_KD_LOSSES = ("hinton", "mse", "smooth_l1")
FEATURE_KD_LOSSES = ("feature", "attention")
KD_LOSSES = LOGIT_KD_LOSSES + FEATURE_KD_LOSSES
# layer-swap crossover over groups (evoprune.evolve.variation implements each)
CROSSOVERS = ("uniform", "one_point", "two_point")
