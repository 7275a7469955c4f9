"""Settings that are valid but make a run's numbers meaningless: ``plan`` lists them, ``run``
prints them before training, and the run's record keeps them (``SETTINGS_WARNINGS`` in its
protocol) for the report to print above its table (a quick smoke test may want them; a table
should not go out without saying so).

Each check reads only the resolved options of a run (:class:`benchmark.config.Run`), by option name,
so it applies to every task that has the option.
"""
from __future__ import annotations

import math

SETTINGS_WARNINGS = "settings_warnings"
"""The protocol key of a run's record that holds :func:`run_warnings`, joined by '; '."""


def ema_warning(run) -> str | None:
    """EMA networks evaluated after fewer steps than their horizon 1 / (1 - beta) are still mostly
    their initialisation: every method then scores about the same."""
    o = run.task_options
    beta = getattr(o, "ema_beta", None)
    if beta is None or getattr(o, "eval_nets", "ema") != "ema" or not 0 < beta < 1:
        return None
    steps = run.planned_steps()
    horizon = 1 / (1 - beta)
    if steps >= horizon:
        return None
    moved = 1 - beta ** steps  # how far the average has moved from its start towards the trained weights
    return (f"the evaluated EMA networks (ema_beta {beta:g}: horizon about {horizon:,.0f} steps) "
            f"move only {100 * moved:.0f}% of the way from their initialisation in the run's {steps:,} steps; "
            f"scores then reflect the initialisation, not the method. Train at least {math.ceil(horizon):,} "
            "steps, lower ema_beta, or set eval_nets: raw")


def validation_warning(run) -> str | None:
    """With ``validation`` on, the checkpoint choices need an evaluation point before the last step."""
    validation = run.suite.settings.validation
    steps = run.planned_steps()
    if not validation.enabled or validation.eval_every < steps:
        return None
    return (f"validation.eval_every ({validation.eval_every:,}) is not below the run's {steps:,} "
            "steps: the only evaluation point is the last step, so best_val and best_test are the last "
            "checkpoint (choose eval_every below the run length)")


def logging_warning(run) -> str | None:
    """``log_every`` longer than the run: losses.csv gets no row and the report no loss curve."""
    every, steps = run.suite.settings.log_every, run.planned_steps()
    if every <= steps:
        return None
    return (f"log_every ({every:,}) is longer than the run ({steps:,} steps): no loss is logged "
            "and the report has no loss curve for it")


CHECKS = (ema_warning, validation_warning, logging_warning)


def run_warnings(run) -> list[str]:
    """The warnings of every check that applies to ``run``."""
    return [w for check in CHECKS if (w := check(run))]


def settings_note(run) -> dict[str, str]:
    """The protocol entry of a run's record that keeps its warnings ({} when none applies)."""
    warnings = run_warnings(run)
    return {SETTINGS_WARNINGS: "; ".join(warnings)} if warnings else {}


def meaningless_settings(suite) -> list[str]:
    """One warning per run and check that applies, named by run (a suite's runs often share one:
    each is listed)."""
    return [f"{run.run_id}: {w}" for run in suite.runs for w in run_warnings(run)]
