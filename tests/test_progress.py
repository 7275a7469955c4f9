"""The suite ETA counts only the steps still to train: resumed and failed runs leave the total."""
import io

from benchmark.progress import SuiteProgress, format_seconds


def _progress(total):
    return SuiteProgress(total, stream=io.StringIO(), interval=0.0)


def test_resumed_steps_leave_the_remaining_total():
    progress = _progress(100)
    progress.resumed("a", 30)
    assert progress.total_steps == 70
    for step in range(31, 41):
        progress.step("a", step, 100, 0.5, {})
    assert progress.total_steps - progress.done_steps == 60


def test_a_failed_run_leaves_its_untrained_steps_out_of_the_eta():
    progress = _progress(200)  # two runs of 100 steps
    progress.resumed("a", 20)
    for step in range(21, 26):
        progress.step("a", step, 100, 1.0, {})
    progress.abandon("a", 100)  # failed at step 25: 75 steps will never be trained
    assert progress.total_steps - progress.done_steps == 100  # only run b is left
    progress.step("b", 1, 100, 2.0, {})
    line = progress.stream.getvalue().splitlines()[-1]
    # 6 trained steps took 7 s in all; 99 steps are left
    assert f"suite {format_seconds(7.0 / 6 * 99)}" in line


def test_abandoning_a_run_that_never_started_skips_all_of_it():
    progress = _progress(50)
    progress.abandon("a", 50)
    assert progress.total_steps - progress.done_steps <= 1  # total is kept >= 1
