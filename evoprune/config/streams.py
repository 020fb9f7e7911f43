"""Named random streams: each purpose's seed derived from the run's seed in one place."""
from __future__ import annotations

# purpose -> (offset, stride): seed + offset + stride * index. The offsets are the ones every front so far
# was made with; changing one changes every front, so new purposes get new names, never new offsets.
STREAMS: dict[str, tuple[int, int]] = {
    "split.test": (0, 0),  # test held out of the whole (from the split seed, see data.split_seed)
    "split.val": (1, 0),  # validation held out of the rest
    "split.cap": (3, 0),  # data.max_*_samples: stratified subsets of each split
    "split.stats": (5, 0),  # the train images a streamed image folder's normalisation comes from
    "parent.batches": (0, 0),  # the parent's training batches and augmentation
    "torch.global": (0, 0),  # torch's global generator where a library draws from it (a fresh head's init)
    "search": (0, 0),  # the search's random.Random: initial population, variation, selection
    "fitness.subset": (17, 0),  # the fine-tune subset, its batch plan and a capped validation subset
    "space.calibration": (29, 0),  # the batch the data-dependent importance criteria (Taylor) score on
    "evaluator.probe": (101, 0),  # the subnets the batched evaluator proves itself on
    "kd.adapters": (7919, 0),  # initial weights of the 1x1 adapters of `feature` KD
    "distill.student": (61, 1),  # the final distillation of student i (0: the pick, 1: --pick2); 2: the
    # initial weights of `distill --student`
    "distill.augment": (1061, 1000),  # student i's augmentation draws
    "distill.specialist": (4001, 1),  # `evoprune specialists`: specialist i's training (its seed)
    "baseline.random": (1000, 0),  # experiments/compare.py: the random-genome baseline
    "fidelity.genomes": (1009, 0),  # experiments/fidelity.py: the sizes and widths of its genomes
    "user.stage": (2003, 1),  # the staged rows of a user's data: Fitness.from_model's train 0, val 1;
    # data.factory's train 2, val 3, test 4
}


def stream_seed(seed: int, purpose: str, index: int = 0) -> int:
    """The seed of random stream `purpose` (number `index` where a purpose has several) for `seed`."""
    try:
        offset, stride = STREAMS[purpose]
    except KeyError:
        raise KeyError(f"unknown random stream {purpose!r}; known: {', '.join(STREAMS)}") from None
    return seed + offset + stride * index
