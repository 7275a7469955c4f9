"""Evolution search for the best subnet under a MACs budget (Fast GAN Compression,
``evolution_search.py``: ``EvolutionSearcher.run_evolution_search``), generic over what a
configuration is scored by and how its MACs are counted.

The official algorithm, kept here rule for rule:

* first generation: ``population_size`` configurations sampled at random (with the
  ``weighted_sample`` / ``weight_strategy`` channel weights), each redrawn until its MACs are within
  the budget;
* each iteration: the population is sorted by score (ascending for FID, descending for mIoU; a
  stable sort, so ties keep their order) and its first ``round(parent_ratio * population_size)``
  become the parents; the best parent is recorded when it beats the best so far; then
  ``round(mutation_ratio * population_size)`` children by mutation (a random parent, each channel
  resampled uniformly with probability ``mutate_prob``) and the rest by crossover (two random
  parents, each channel taken from either with probability 1/2), every child redrawn until within
  budget; the next population is parents + children;
* scores and MACs are memoised per configuration.

Differences (docs/fidelity.md, "Compression: networks and search"): one seeded ``random.Random``
draws everything (the official code mixes python ``random`` and ``numpy``); the state is saved
atomically after every iteration (and every ``checkpoint_every_s`` seconds while scoring) and a rerun
continues bit-identically; the last generation's children, which the official loop scores but
never ranks, are ranked once more at the end (``rank_last_generation``, official: False); a budget
no subnet meets is an error instead of an endless loop.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from benchmark.core.atomic import atomic_write
from benchmark.core.errors import CheckpointError, ConfigError
from .networks import (check_choices, check_config, decode_config, encode_config, sample_config, sample_layer,
                       smallest_config)

__all__ = ["EvolutionOptions", "OFFICIAL_SEARCH_OPTIONS", "EvolutionSearch"]

STATE_FORMAT = 1


@dataclass(frozen=True)
class EvolutionOptions:
    """Options of ``evolution_search.py`` (``options/evolution_options.py`` defaults) plus
    ``rank_last_generation``. ``budget`` is in MACs (as ``--budget``, e.g. 3e9)."""
    population_size: int = 100
    mutation_ratio: float = 0.5
    parent_ratio: float = 0.25
    iterations: int = 500            # --evolution_iters
    mutate_prob: float = 0.2
    budget: float = math.inf
    weighted_sample: float = 1.0     # first generation only
    weight_strategy: str = "arithmetic"
    rank_last_generation: bool = True  # official: False (the last children are scored, never ranked)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"evolution search option {name}={getattr(self, name)!r}: expected {expected}")
        if not isinstance(self.population_size, int) or self.population_size < 1:
            raise bad("population_size", "an int >= 1")
        if not 0.0 <= self.mutation_ratio <= 1.0:
            raise bad("mutation_ratio", "a ratio in [0, 1]")
        if not 0.0 < self.parent_ratio <= 1.0 or self.parents_size < 1:
            raise bad("parent_ratio", "a ratio in (0, 1] leaving at least one parent")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise bad("iterations", "an int >= 0")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise bad("mutate_prob", "a probability in [0, 1]")
        if not self.budget > 0:
            raise bad("budget", "a positive number of MACs (e.g. 3e9)")
        if self.weight_strategy not in ("arithmetic", "geometric"):
            raise bad("weight_strategy", "'arithmetic' or 'geometric'")
        if not self.weighted_sample >= 1.0:
            raise bad("weighted_sample", "a number >= 1 (1 = uniform)")

    @property
    def mutation_numbers(self) -> int:
        return int(round(self.mutation_ratio * self.population_size))

    @property
    def parents_size(self) -> int:
        return int(round(self.parent_ratio * self.population_size))


# The official scripts (scripts/*/*_fast/evolution_search.sh); criterion: FID except Cityscapes (mIoU).
OFFICIAL_SEARCH_OPTIONS: dict[str, EvolutionOptions] = {
    "horse2zebra": EvolutionOptions(mutate_prob=0.4, budget=3e9, weighted_sample=2.0),
    "cityscapes": EvolutionOptions(mutate_prob=0.3, budget=5.7e9),
    "map2sat": EvolutionOptions(mutate_prob=0.3, budget=4.6e9),
}

# Draws of a configuration within the budget before the search gives up (the official loops forever).
MAX_DRAWS = 100_000


class EvolutionSearch:
    """``EvolutionSearch(options, choices, macs_of, score, higher_is_better, state_path, seed).run()``
    returns ``(best_config, best_score, history)``.

    ``macs_of(config) -> int`` and ``score(config) -> float`` are called at most once per
    configuration (memoised, also across a resume); ``score`` must be deterministic for the resume to
    be bit-exact. ``history`` has one entry per iteration: ``{"iteration", "best_score", "best_macs",
    "best_config"}``, the best so far when that iteration ranked its population. ``identity`` is any text naming what the scores depend on
    (e.g. the supernet checkpoint's hash): a saved state with another identity is refused.

    Several processes searching together (torchrun, every one scoring alike) share one state file:
    only the one with ``writes_state`` writes it, and ``shared(value)`` hands that one's ``value`` to
    every process (the state it read, so that all resume alike); by default one process does both.
    """

    def __init__(self, options: EvolutionOptions, choices: Sequence[Sequence[int]],
                 macs_of: Callable[[dict], int], score: Callable[[dict], float], higher_is_better: bool,
                 state_path: Path, seed: int, log: Callable[[str], None] = print, identity: str = "",
                 checkpoint_every_s: float = 60.0, writes_state: bool = True,
                 shared: Callable[[object], object] = lambda value: value):
        self.options, self.choices = options, check_choices(choices)
        self.macs_of, self.score_of, self.higher_is_better = macs_of, score, bool(higher_is_better)
        self.state_path, self.seed, self.log = Path(state_path), int(seed), log
        self.identity, self.checkpoint_every_s = str(identity), float(checkpoint_every_s)
        self.writes_state, self.shared = bool(writes_state), shared
        self.rng = random.Random(self.seed)
        self.macs_cache: dict[str, int] = {}
        self.score_cache: dict[str, float] = {}
        # The state at the start of the next iteration (what a resume restarts from).
        self._committed: dict = {"iteration": None, "population": None, "rng": self.rng.getstate(),
                                 "best": None, "history": []}
        self._last_save = time.monotonic()

    # ---------------------------------------------------------------------------------------------
    # Memoised measurements
    # ---------------------------------------------------------------------------------------------
    def macs(self, config: dict) -> int:
        key = encode_config(config)
        if key not in self.macs_cache:
            self.macs_cache[key] = int(self.macs_of(config))
        return self.macs_cache[key]

    def score(self, config: dict) -> float:
        key = encode_config(config)
        if key not in self.score_cache:
            value = float(self.score_of(config))
            if not math.isfinite(value):
                raise ValueError(f"evolution search: the score of subnet {key} is {value}; expected a finite number")
            self.score_cache[key] = value
            if time.monotonic() - self._last_save >= self.checkpoint_every_s:
                self._save()  # keeps the scores of a partly scored generation across an interruption
        return self.score_cache[key]

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    # ---------------------------------------------------------------------------------------------
    # Sampling (random_sample, mutate_sample, crossover_sample)
    # ---------------------------------------------------------------------------------------------
    def _within_budget(self, draw: Callable[[], dict], what: str) -> dict:
        for _ in range(MAX_DRAWS):
            config = draw()
            if self.macs(config) <= self.options.budget:
                return config
        raise ConfigError(f"evolution search: no {what} within the budget of {self.options.budget:.4g} MACs "
                          f"after {MAX_DRAWS} draws; raise the budget")

    def random_sample(self) -> dict:
        o = self.options
        return self._within_budget(
            lambda: sample_config(self.choices, self.rng, o.weighted_sample, o.weight_strategy), "random subnet")

    def mutate(self, parent: dict) -> dict:
        def draw() -> dict:
            channels = list(parent["channels"])
            for i in range(len(channels)):
                if self.rng.random() < self.options.mutate_prob:
                    channels[i] = sample_layer(self.choices, i, self.rng)
            return {"channels": channels}
        return self._within_budget(draw, "mutation")

    def crossover(self, first: dict, second: dict) -> dict:
        def draw() -> dict:
            return {"channels": [self.rng.choice([a, b]) for a, b in zip(first["channels"], second["channels"])]}
        return self._within_budget(draw, "crossover")

    # ---------------------------------------------------------------------------------------------
    # The search
    # ---------------------------------------------------------------------------------------------
    def _rank(self, population: list[dict]) -> list[dict]:
        return sorted(population, key=self.score, reverse=self.higher_is_better)

    def _record_best(self, best: dict | None, candidate: dict) -> dict:
        value = self.score(candidate)
        if best is None or self._better(value, best["score"]):
            return {"config": encode_config(candidate), "score": value, "macs": self.macs(candidate)}
        return best

    def run(self) -> tuple[dict, float, list[dict]]:
        o = self.options
        smallest = smallest_config(self.choices)
        if self.macs(smallest) > o.budget:
            raise ConfigError(f"evolution search: the budget {o.budget:.4g} MACs is below the smallest subnet's "
                              f"{self.macs(smallest):.4g} MACs ({encode_config(smallest)})")
        self._load()
        state = self._committed
        if state["population"] is None:  # first generation
            self.rng.setstate(state["rng"])
            population = [self.random_sample() for _ in range(o.population_size)]
            for child in population:
                self.score(child)
            self._commit(0, population, None, [])
        iteration, population = self._committed["iteration"], self._committed["population"]
        best, history = self._committed["best"], self._committed["history"]
        while iteration < o.iterations:
            self.rng.setstate(self._committed["rng"])
            parents = self._rank(population)[:o.parents_size]
            best = self._record_best(best, parents[0])
            history = history + [{"iteration": iteration, "best_score": best["score"], "best_macs": best["macs"],
                                  "best_config": best["config"]}]
            self.log(f"evolution search iteration {iteration + 1}/{o.iterations}: best {best['score']:.4f} "
                     f"at {best['macs'] / 1e9:.3f} GMACs ({best['config']}); {len(self.score_cache)} subnets scored")
            children = [self.mutate(parents[self.rng.randrange(o.parents_size)]) for _ in range(o.mutation_numbers)]
            for _ in range(o.population_size - o.mutation_numbers):
                first = parents[self.rng.randrange(o.parents_size)]
                second = parents[self.rng.randrange(o.parents_size)]
                children.append(self.crossover(first, second))
            for child in children:
                self.score(child)
            population, iteration = parents + children, iteration + 1
            self._commit(iteration, population, best, history)
        if o.rank_last_generation or best is None:
            best = self._record_best(best, self._rank(population)[0])
        self.log(f"evolution search done: best {best['score']:.4f} at {best['macs'] / 1e9:.3f} GMACs "
                 f"({best['config']}); {len(self.score_cache)} subnets scored")
        return decode_config(best["config"]), best["score"], history

    # ---------------------------------------------------------------------------------------------
    # State (JSON, written atomically)
    # ---------------------------------------------------------------------------------------------
    def _settings(self) -> dict:
        """What a saved state must have been written with. ``iterations`` is left out: no iteration
        depends on the total, so a finished search can be extended by raising it."""
        options = {k: v for k, v in dataclasses.asdict(self.options).items() if k != "iterations"}
        return {"options": options, "choices": self.choices, "seed": self.seed,
                "higher_is_better": self.higher_is_better, "identity": self.identity}

    def _commit(self, iteration: int, population: list[dict], best: dict | None, history: list[dict]) -> None:
        self._committed = {"iteration": iteration, "population": [dict(channels=list(c["channels"])) for c in population],
                           "rng": self.rng.getstate(), "best": best, "history": history}
        self._save()

    def _save(self) -> None:
        if not self.writes_state:
            return
        c = self._committed
        version, internal, gauss = c["rng"]
        state = {"format": STATE_FORMAT, "settings": self._settings(), "iteration": c["iteration"],
                 "population": None if c["population"] is None else [encode_config(p) for p in c["population"]],
                 "rng": [version, list(internal), gauss], "best": c["best"], "history": c["history"],
                 "macs_cache": self.macs_cache, "score_cache": self.score_cache}
        with atomic_write(self.state_path, "w", encoding="utf-8") as f:
            json.dump(state, f)
        self._last_save = time.monotonic()

    def _read_state(self) -> dict | None:
        """The saved state (None when there is none), as the process that writes it reads it."""
        read: dict | None = None
        if self.writes_state:
            try:
                read = {"state": (json.loads(self.state_path.read_text(encoding="utf-8"))
                                  if self.state_path.exists() else None)}
            except (OSError, ValueError) as exc:
                read = {"error": str(exc)}
        read = self.shared(read)
        if "error" in read:  # every process stops with the same error
            raise CheckpointError(f"evolution search state '{self.state_path}' cannot be read ({read['error']}); "
                                  "move it away to restart the search")
        return read["state"]

    def _load(self) -> None:
        state = self._read_state()
        if state is None:
            return
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"'{self.state_path}' is not an evolution search state of format {STATE_FORMAT}")
        settings = json.loads(json.dumps(self._settings()))  # as it reads back from JSON (tuples -> lists)
        if state["settings"] != settings:
            raise CheckpointError(f"evolution search state '{self.state_path}' was written with other settings "
                                  f"({state['settings']}); expected {settings}. Move it away to restart the search")
        if (state["iteration"] or 0) > self.options.iterations:
            raise CheckpointError(f"evolution search state '{self.state_path}' has run {state['iteration']} iterations, "
                                  f"more than the {self.options.iterations} asked for; raise iterations or move it away")
        version, internal, gauss = state["rng"]
        self.macs_cache = {k: int(v) for k, v in state["macs_cache"].items()}
        self.score_cache = {k: float(v) for k, v in state["score_cache"].items()}
        population = state["population"]
        self._committed = {"iteration": state["iteration"],
                           "population": None if population is None else [decode_config(p) for p in population],
                           "rng": (version, tuple(internal), gauss), "best": state["best"], "history": state["history"]}
        for config in self._committed["population"] or []:
            check_config(config, self.choices)
        self.log(f"evolution search: resuming from '{self.state_path}' at iteration "
                 f"{(state['iteration'] or 0) + 1} with {len(self.score_cache)} subnets scored")
