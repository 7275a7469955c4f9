"""The base layer: what method, task and dataset plugins may import.

Registries, errors, typed settings, atomic writes, YAML, schedules, checkpoints, the contract types
(``context``: RunContext, Evaluation, EvaluationConfig; ``images``: ImageSet, LabelInfo), metrics,
segmenters and the pretrained-weights table. Nothing here imports ``methods``, ``tasks``,
``datasets`` or the application (``benchmark.config``, ``runner``, ``report``, ``perf``, ``cli``):
the import-linter contracts in pyproject.toml enforce it.
"""
