"""The evolution search (tasks/compression/search.py) on a cheap synthetic problem: the official rules
of evolution_search.py, the MACs budget, memoisation and a bit-exact resume."""
import json

import pytest

from benchmark.core.errors import CheckpointError, ConfigError
from tasks.compression.networks import CHANNEL_CHOICES, encode_config
from tasks.compression.search import OFFICIAL_SEARCH_OPTIONS, EvolutionOptions, EvolutionSearch

CHOICES = CHANNEL_CHOICES["cyclegan"]           # 5 ** 8 configurations
TARGET = [48, 16, 32, 24, 64, 16, 48, 24]      # the toy optimum; its "MACs" are within BUDGET


def toy_macs(config):
    return sum(c * c for c in config["channels"])


BUDGET = 12_000  # the largest subnet has 8 * 64**2 = 32768; TARGET has 11_904


def toy_fid(config):
    """Lower is better; 0 at TARGET."""
    return float(sum((c - t) ** 2 for c, t in zip(config["channels"], TARGET)))


class Interrupted(Exception):
    pass


def make_search(tmp_path, name="state.json", score=toy_fid, higher_is_better=False, log=None, **options):
    settings = dict(population_size=12, iterations=8, mutate_prob=0.3, budget=BUDGET)
    settings.update(options)
    return EvolutionSearch(EvolutionOptions(**settings), CHOICES, toy_macs, score, higher_is_better,
                           tmp_path / name, seed=5, log=log or (lambda message: None))


def test_official_defaults_and_presets():
    o = EvolutionOptions()
    assert (o.population_size, o.mutation_ratio, o.parent_ratio, o.iterations, o.mutate_prob) == (100, 0.5, 0.25, 500, 0.2)
    assert (o.parents_size, o.mutation_numbers) == (25, 50)
    assert OFFICIAL_SEARCH_OPTIONS["horse2zebra"].budget == 3e9
    assert OFFICIAL_SEARCH_OPTIONS["horse2zebra"].mutate_prob == 0.4
    with pytest.raises(ConfigError, match="parent_ratio"):
        EvolutionOptions(population_size=2, parent_ratio=0.1)


def test_search_improves_on_the_first_generation_and_respects_the_budget(tmp_path):
    first = make_search(tmp_path, "first.json", iterations=0)
    _, first_best, _ = first.run()
    search = make_search(tmp_path)
    best, best_score, history = search.run()
    assert best_score < first_best
    assert best_score == toy_fid(best)
    assert len(history) == 8 and [h["iteration"] for h in history] == list(range(8))
    assert all(a["best_score"] >= b["best_score"] for a, b in zip(history, history[1:]))  # never worse
    state = json.loads((tmp_path / "state.json").read_text())
    configs = [{"channels": [int(c) for c in key.split("_")]} for key in state["population"]]
    assert len(configs) == 3 + 12  # parents + children
    assert all(toy_macs(c) <= BUDGET for c in configs + [best])
    assert all(int(h["best_macs"]) <= BUDGET for h in history)
    assert all(toy_macs({"channels": [int(v) for v in h["best_config"].split("_")]}) == h["best_macs"] for h in history)


def test_higher_is_better_maximises(tmp_path):
    best, score, _ = make_search(tmp_path, score=lambda c: -toy_fid(c), higher_is_better=True).run()
    best_low, score_low, _ = make_search(tmp_path, "low.json").run()
    assert score == -score_low and best == best_low  # the same search, mirrored


def test_scores_are_memoised(tmp_path):
    calls = []

    def score(config):
        calls.append(encode_config(config))
        return toy_fid(config)

    make_search(tmp_path, score=score).run()
    assert len(calls) == len(set(calls))


def test_mutation_without_change_never_improves(tmp_path):
    """mutate_prob 0 and children by mutation only: every child copies a parent, so the best stays
    the first generation's best (the official mutation rule)."""
    _, first_best, _ = make_search(tmp_path, "first.json", iterations=0).run()
    _, best, _ = make_search(tmp_path, mutate_prob=0.0, mutation_ratio=1.0).run()
    assert best == first_best


def test_progress_is_logged_every_iteration(tmp_path):
    lines = []
    make_search(tmp_path, log=lines.append, iterations=3).run()
    iteration_lines = [line for line in lines if "iteration" in line]
    assert len(iteration_lines) == 3 and all("GMACs" in line and "best" in line for line in iteration_lines)


@pytest.mark.parametrize("checkpoint_every_s", [0.0, 1e9])  # save after every score / after iterations only
@pytest.mark.parametrize("fail_after", [5, 40])             # in the first generation / in a later iteration
def test_resume_is_bit_exact(tmp_path, checkpoint_every_s, fail_after):
    reference = make_search(tmp_path, "reference.json").run()

    calls = []

    def flaky(config):
        if len(calls) == fail_after:
            raise Interrupted
        calls.append(encode_config(config))
        return toy_fid(config)

    interrupted = make_search(tmp_path, "resumed.json", score=flaky)
    interrupted.checkpoint_every_s = checkpoint_every_s
    with pytest.raises(Interrupted):
        interrupted.run()
    if fail_after == 5 and checkpoint_every_s > 0:  # nothing saved yet: the rerun starts afresh
        assert not (tmp_path / "resumed.json").exists()
    else:  # interrupted in the first generation (no iteration committed) or later
        saved = json.loads((tmp_path / "resumed.json").read_text())
        assert (saved["iteration"] is None) == (fail_after == 5)

    resumed_calls = []

    def counting(config):
        resumed_calls.append(encode_config(config))
        return toy_fid(config)

    resumed = make_search(tmp_path, "resumed.json", score=counting).run()
    assert resumed == reference
    a = json.loads((tmp_path / "reference.json").read_text())
    b = json.loads((tmp_path / "resumed.json").read_text())
    assert a == b
    if checkpoint_every_s == 0.0:  # every score was kept: nothing is scored twice
        assert not set(calls) & set(resumed_calls)


def test_a_finished_search_extends_as_if_run_at_once(tmp_path):
    at_once = make_search(tmp_path, "once.json", iterations=6).run()
    make_search(tmp_path, "extended.json", iterations=3).run()
    assert make_search(tmp_path, "extended.json", iterations=6).run() == at_once
    with pytest.raises(CheckpointError, match="more than"):
        make_search(tmp_path, "extended.json", iterations=2).run()


def test_other_settings_refuse_the_saved_state(tmp_path):
    make_search(tmp_path, iterations=1).run()
    with pytest.raises(CheckpointError, match="other settings"):
        make_search(tmp_path, iterations=1, mutate_prob=0.5).run()
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be read"):
        make_search(tmp_path, iterations=1).run()


def test_budget_below_the_smallest_subnet_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="below the smallest subnet"):
        make_search(tmp_path, budget=8 * 16 * 16 - 1).run()
