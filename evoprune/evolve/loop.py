"""The generation loop: DEAP NSGA-II (mu + lambda) or a scalar GA, reporting each generation to its callbacks."""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from deap import base, tools
from tqdm import tqdm

from evoprune.config import PopulationConfig, SearchConfig
from evoprune.config.streams import stream_seed
from evoprune.genome import Genome
from evoprune.objectives import PARETO_OBJECTIVES
from evoprune.evolve.callbacks import SearchCallback
from evoprune.evolve.pareto import front_indices, hypervolume
from evoprune.evolve.population import initial_population
from evoprune.evolve.state import Record, SearchState, rng_from_json, rng_to_json
from evoprune.evolve.variation import crossover, mutate

if TYPE_CHECKING:
    from evoprune.fitness.facade import Fitness


class _Individual:
    """What DEAP selects: a genome plus a DEAP fitness (no model inside)."""

    __slots__ = ("record", "fitness")

    def __init__(self, record: Record, fitness: base.Fitness):
        self.record = record
        self.fitness = fitness


class Search:
    """Runs the evolutionary search for one Fitness; returns its state and reports each generation to
    `callbacks` (nothing is written unless a callback writes it: `evoprune.run.RunDirSearch` adds the
    run directory's writer)."""

    def __init__(self, fitness: "Fitness", callbacks: Sequence[SearchCallback] = (), progress: bool = True,
                 log: Callable[[str], None] | None = None, *, search: SearchConfig | None = None,
                 population: PopulationConfig | None = None, seed: int | None = None):
        """`search`, `population`, `seed`: this search's settings (default: those of `fitness.cfg`), e.g. to
        run several searches with other budgets or modes on one Fitness (its cache is shared)."""
        if isinstance(callbacks, (str, Path)):
            raise TypeError("Search(fitness, run_dir) is evoprune.run.RunDirSearch(fitness, run_dir); "
                            "Search takes callbacks")
        self.fitness = fitness
        self.search_cfg = search or fitness.cfg.search
        self.population_cfg = population or fitness.cfg.population
        self.seed = fitness.cfg.seed if seed is None else seed
        self.callbacks = list(callbacks)
        self.progress = progress
        self.log = log or (lambda line: tqdm.write(line))
        scfg = self.search_cfg
        # DEAP weights come from the objectives' declared directions, in one place.
        weights = tuple(s for _, s in PARETO_OBJECTIVES) if scfg.mode == "pareto" else (1.0,)
        self._fitness_cls = type("EvopruneFitness", (base.Fitness,), {"weights": weights})

    # -- individuals -------------------------------------------------------------------------
    def _individual(self, record: Record) -> _Individual:
        s = self.search_cfg
        values = record.objectives.values(s.mode, s.scalar_lambda)
        if not record.objectives.valid:  # a diverged fine-tune: worse than any valid individual
            values = (-1.0, 2.0) if s.mode == "pareto" else (-1.0 - s.scalar_lambda * 2.0,)
        return _Individual(record, self._fitness_cls(values))

    def _evaluate(self, state: SearchState, items: list[tuple[Genome, str]], generation: int) -> list[Record]:
        budget = self.search_cfg.max_evaluations
        if budget:
            items = items[: max(0, budget - len(state.records))]
        bar = tqdm(total=len(items), desc=f"gen {generation}", unit="eval", leave=False, disable=not self.progress)
        objs = self.fitness([g for g, _ in items], on_done=bar.update)
        bar.close()
        new = []
        for (genome, origin), obj in zip(items, objs):
            rec = Record(len(state.records), generation, genome, origin, obj)
            state.records.append(rec)
            new.append(rec)
        return new

    # -- selection ---------------------------------------------------------------------------
    def _pick_parent(self, pop: list[_Individual], rng: random.Random) -> _Individual:
        """Binary tournament: NSGA-II's crowded comparison, or the scalar GA's tournament."""
        s = self.search_cfg
        if s.mode == "scalar":
            return max(rng.sample(pop, min(s.tournament_size, len(pop))), key=lambda i: i.fitness.wvalues)
        if len(pop) < 2:  # a space with a single legal genome
            return pop[0]
        a, b = rng.sample(pop, 2)
        if a.fitness.dominates(b.fitness):
            return a
        if b.fitness.dominates(a.fitness):
            return b
        da, db = getattr(a.fitness, "crowding_dist", 0.0), getattr(b.fitness, "crowding_dist", 0.0)
        if da != db:
            return a if da > db else b
        return a if rng.random() < 0.5 else b

    def _survivors(self, pool: list[_Individual]) -> list[_Individual]:
        mu = self.search_cfg.population
        if self.search_cfg.mode == "scalar":  # (mu + lambda) truncation on the scalar fitness
            return sorted(pool, key=lambda i: i.fitness.wvalues, reverse=True)[:mu]
        return tools.selNSGA2(pool, min(mu, len(pool)))

    def _offspring(self, pop: list[_Individual], seen: set[str], rng: random.Random) -> list[tuple[Genome, str]]:
        s, space = self.search_cfg, self.fitness.space
        criteria = self.population_cfg.criteria
        children: list[tuple[Genome, str]] = []
        for _ in range(50 * s.offspring):  # bounded: a tiny space may run out of new genomes
            if len(children) >= s.offspring:
                break
            p1, p2 = self._pick_parent(pop, rng), self._pick_parent(pop, rng)
            if rng.random() < s.cx_prob and p1 is not p2:
                child = crossover(p1.record.genome, p2.record.genome, space, s.crossover, rng)[0]
                origin = "+".join(sorted(set(p1.record.origin.split("+")) | set(p2.record.origin.split("+"))))
            else:
                child, origin = p1.record.genome, p1.record.origin
            # Mutate by chance, and always when the child would repeat a known genome (deduplication).
            if rng.random() < s.mut_prob or child.key() in seen:
                child = mutate(child, space, rng, s.mut_groups, criteria)
            if child.key() in seen:
                continue
            seen.add(child.key())
            children.append((child, origin))
        return children

    # -- the loop ----------------------------------------------------------------------------
    def _summarise(self, state: SearchState, generation: int, n_new: int) -> dict[str, Any]:
        objs = [r.objectives for r in state.records]
        ok = [o for o in objs if o.valid]
        row = {"generation": generation, "evaluations": len(objs), "new_evaluations": n_new,
               "best_accuracy": max((o.accuracy for o in ok), default=0.0),
               "smallest_size_ratio": min((o.size_ratio for o in ok), default=1.0),
               "front_size": len(front_indices(objs)), "hypervolume": hypervolume(objs),
               "regressed": sum(o.status == "regressed" for o in objs), "elapsed_s": round(state.elapsed, 2)}
        state.history.append(row)
        self.log(f"gen {generation:3d} | evals {row['evaluations']:5d} | best acc {row['best_accuracy']:.4f} "
                 f"| smallest size {row['smallest_size_ratio']:.3f} | front {row['front_size']:3d} "
                 f"| HV {row['hypervolume']:.4f} | {row['elapsed_s']:.1f}s"
                 + (f" | {row['regressed']} fine-tunes regressed" if row["regressed"] else ""))
        return row

    def _generation_done(self, state: SearchState, pop: list[_Individual], rng: random.Random) -> None:
        """Complete `state` with the selected population and the RNG, then report it to the callbacks."""
        state.population = [i.record.genome.key() for i in pop]
        state.crowding = [float(getattr(i.fitness, "crowding_dist", 0.0)) for i in pop]
        state.rng_state = rng_to_json(rng)
        for callback in self.callbacks:
            callback.on_generation(state, self.fitness)

    def _restore(self, state: SearchState) -> tuple[list[_Individual], random.Random]:
        by_key = {r.genome.key(): r for r in state.records}
        self.fitness.cache.update({k: r.objectives for k, r in by_key.items()})
        pop = [self._individual(by_key[k]) for k in state.population]
        for ind, dist in zip(pop, state.crowding):
            ind.fitness.crowding_dist = dist
        return pop, rng_from_json(state.rng_state)

    def run(self, resume_from: SearchState | None = None) -> SearchState:
        """Run the search, or continue it from `resume_from` (a state a callback was given after a
        generation), until the generation or evaluation budget is spent or the search plateaus."""
        s = self.search_cfg
        start = time.perf_counter()
        if resume_from is not None:
            state = resume_from
            pop, rng = self._restore(state)
            self.log(f"resuming after generation {state.generation} ({len(state.records)} evaluations)")
            for callback in self.callbacks:
                callback.on_start(state, self.fitness)
        else:
            state, rng = SearchState(), random.Random(stream_seed(self.seed, "search"))
            for callback in self.callbacks:
                callback.on_start(state, self.fitness)
            init = initial_population(self.fitness.space, self.population_cfg, s.population, rng)
            new = self._evaluate(state, init, 0)
            pop = self._survivors([self._individual(r) for r in new])
            state.generation = 0
            state.elapsed += time.perf_counter() - start
            self._summarise(state, 0, len(new))
            self._generation_done(state, pop, rng)
        while state.generation < s.generations and not self._budget_spent(state) and not self._plateaued(state):
            t0 = time.perf_counter()
            generation = state.generation + 1
            seen = {r.genome.key() for r in state.records}
            new = self._evaluate(state, self._offspring(pop, seen, rng), generation)
            pop = self._survivors(pop + [self._individual(r) for r in new])
            state.generation = generation
            state.elapsed += time.perf_counter() - t0
            self._summarise(state, generation, len(new))
            self._generation_done(state, pop, rng)
        for callback in self.callbacks:
            callback.on_finish(state, self.fitness)
        return state

    def _progress(self, state: SearchState, generation: int) -> float:
        """What a plateau is judged on: the hypervolume (pareto) or the best scalar fitness (scalar) of
        everything evaluated up to `generation`."""
        s = self.search_cfg
        if s.mode == "pareto":
            return next(row["hypervolume"] for row in state.history if row["generation"] == generation)
        return max((r.objectives.values("scalar", s.scalar_lambda)[0] for r in state.records
                    if r.generation <= generation and r.objectives.valid), default=0.0)

    def _plateaued(self, state: SearchState) -> bool:
        """The last `search.patience` generations together gained less than `search.min_gain`."""
        s = self.search_cfg
        if not s.patience or state.generation < s.patience:
            return False
        gain = self._progress(state, state.generation) - self._progress(state, state.generation - s.patience)
        if gain >= s.min_gain:
            return False
        what = "hypervolume" if s.mode == "pareto" else "best scalar fitness"
        self.log(f"stopping after generation {state.generation}: the {what} gained {gain:.4f} over the last "
                 f"{s.patience} generations (search.min_gain {s.min_gain})")
        return True

    def _budget_spent(self, state: SearchState) -> bool:
        budget = self.search_cfg.max_evaluations
        return bool(budget) and len(state.records) >= budget
