"""Tests for twiddle._board: running trials see each other's learning curves.

The end-to-end tests make two trials overlap in time through files (each reports its
first value, then waits for the other's file), so that what they see does not depend
on timing; every wait has a timeout.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import twiddle
from twiddle import SuccessiveHalving, TrialPruned
from twiddle._board import BoardView, CurveBoard
from twiddle._schedulers import LearningCurve
from twiddle._trial import TrialState

TIMEOUT = 60.0
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_board_snapshot_excludes_the_asking_trial() -> None:
    board = CurveBoard([LearningCurve({1: 0.5}, TrialState.COMPLETE, 0)])
    try:
        version, curves = board.snapshot(1)
        assert curves == [LearningCurve({1: 0.5}, TrialState.COMPLETE, 0)]
        assert board.snapshot(0)[1] == []
        assert version == 1
    finally:
        board.close()


def test_view_sends_its_curve_and_receives_only_changes() -> None:
    board = CurveBoard([LearningCurve({1: 0.5}, TrialState.COMPLETE, 0)])
    try:
        assert board.key is not None
        v1, s1 = board.snapshot(1)
        v2, s2 = board.snapshot(2)
        one = BoardView(board.key, 1, v1, s1)
        two = BoardView(board.key, 2, v2, s2)
        assert one.others({1: 0.7}) == [LearningCurve({1: 0.5}, TrialState.COMPLETE, 0)]
        # trial 2 now sees trial 1 running, with the value it sent
        seen = {c.number: c for c in two.others({1: 0.6})}
        assert seen[1] == LearningCurve({1: 0.7}, TrialState.RUNNING, 1)
        assert set(seen) == {0, 1}
        # an answer carries only what changed since the view's version
        _, changed = board._answer((2, {1: 0.6}, two.version))
        assert changed == {}
        # trial 1 finishes: its final curve replaces the running one everywhere
        board.finish(1, {1: 0.7, 2: 0.4}, TrialState.COMPLETE)
        seen = {c.number: c for c in two.others({1: 0.6, 2: 0.5})}
        assert seen[1] == LearningCurve({1: 0.7, 2: 0.4}, TrialState.COMPLETE, 1)
        # a late running curve never overwrites a final one
        board._answer((1, {1: 9.0}, 0))
        assert LearningCurve({1: 0.7, 2: 0.4}, TrialState.COMPLETE, 1) in board.snapshot(2)[1]
        # a trial that ends without a curve (its worker crashed) is forgotten
        board.finish(2, {}, TrialState.FAIL)
        assert [c.number for c in one.others({1: 0.7})] == [0]
    finally:
        board.close()


def test_view_keeps_its_snapshot_when_the_driver_cannot_be_reached() -> None:
    board = CurveBoard([LearningCurve({1: 0.5}, TrialState.COMPLETE, 0)])
    assert board.key is not None
    view = BoardView(board.key, 1, *board.snapshot(1))
    board.close()
    assert view.others({1: 0.1}) == [LearningCurve({1: 0.5}, TrialState.COMPLETE, 0)]
    assert not view.live


# ------------------------------------------------------------------ end to end


def _two_rivals(folder: Path) -> Any:
    """An objective for two overlapping trials: both report at step 1, then decide."""

    def objective(trial: twiddle.Trial) -> float:
        loss = [0.2, 0.8][trial.number]  # trial 1 is clearly worse
        trial.report(loss, 1)
        (folder / f"reported-{trial.number}").touch()
        deadline = time.monotonic() + TIMEOUT
        while len(list(folder.glob("reported-*"))) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the other trial never reported")
            time.sleep(0.005)
        if trial.number == 1:  # decide once trial 0's value at step 1 can be seen
            for _ in range(500):  # up to about 5 s
                if _rival_seen(trial):
                    break
                time.sleep(0.01)
        if trial.should_prune():
            raise TrialPruned("stopped at step 1")
        trial.report(loss, 2)
        return loss

    return objective


def _rival_seen(trial: twiddle.Trial) -> bool:
    # Trial 0 sends its value when it decides at step 1, or the driver posts it when
    # trial 0 finishes; either way trial 1's view of the other curves shows it.
    view = trial._live_curves
    return view is not None and any(c.number == 0 and 1 in c.values for c in view())


def _run(tmp_path: Path, **kwargs: Any) -> dict[int, TrialState]:
    study = twiddle.Study(seed=0, sampler="random")
    study.optimize(
        _two_rivals(tmp_path),
        n_trials=2,
        scheduler=SuccessiveHalving(min_resource=1, reduction_factor=2),
        **kwargs,
    )
    return {t.number: t.state for t in study.trials}


@pytest.mark.slow
def test_trials_running_in_worker_processes_see_each_other(tmp_path: Path) -> None:
    # ASHA keeps 1 of the 2 values at rung 1: the worse trial must be stopped, which
    # it can only be if it sees the other, still running, trial's value.
    assert _run(tmp_path, n_jobs=2) == {0: TrialState.COMPLETE, 1: TrialState.PRUNED}


def test_trials_running_in_threads_see_each_other(tmp_path: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        states = _run(tmp_path, executor=pool, n_jobs=2)
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_trials_in_a_foreign_process_pool_see_each_other(tmp_path: Path, method: str) -> None:
    # A standard-library pool's workers have no pipe to the driver (and a forked one
    # holds only a copy of its handler table): they reach the board through the
    # driver's call server.
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"needs the {method} start method")
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        states = _run(tmp_path, executor=pool, n_jobs=2)
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED}


@pytest.mark.slow
def test_without_the_call_server_a_foreign_pool_uses_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TWIDDLE_DRIVER_HOST=off: the pool's workers cannot reach the driver, so each
    # trial keeps the snapshot taken at dispatch (empty here): the worse trial waits
    # in vain to see the other and is not stopped (with the server it is, above).
    monkeypatch.setenv("TWIDDLE_DRIVER_HOST", "off")
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        states = _run(tmp_path, executor=pool, n_jobs=2)
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE}


@pytest.mark.slow
def test_trials_on_a_dask_cluster_see_each_other(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        states = _run(tmp_path, executor=client.get_executor(pure=False), n_jobs=2)
    assert states == {0: TrialState.COMPLETE, 1: TrialState.PRUNED}


def test_a_decision_to_go_on_stands_until_the_next_rung() -> None:
    # ask()-driven trials read the study's curves live; a trial promoted at rung 1 is
    # not re-judged at steps 2 and 3 when better trials reach rung 1 after it, but is
    # judged again at rung 4 (ASHA promotes once per rung).
    study = twiddle.Study(seed=0, sampler="random")
    asha = SuccessiveHalving(min_resource=1, reduction_factor=4)  # rungs 1, 4, 16
    first = study.ask(scheduler=asha)
    first.report(0.5, 1)
    assert not first.should_prune()  # alone at rung 1
    for loss in (0.1, 0.2, 0.3):
        rival = study.ask(scheduler=asha)
        for step in (1, 2, 3, 4):
            rival.report(loss, step)
        study.tell(rival, loss)
    for step in (2, 3):
        first.report(0.5, step)
        assert not first.should_prune()
    first.report(0.5, 4)
    assert first.should_prune()  # rung 4: the worst of 4
    # without the standing decision, step 2 would have stopped it already
    assert asha.should_stop({1: 0.5, 2: 0.5}, study._curves(first.number))


def test_standing_decisions_ask_only_at_a_new_decision_point() -> None:
    from twiddle._schedulers import StandingDecisions

    asked = []

    def others() -> list[dict[int, float]]:
        asked.append(1)
        return [{1: 0.1, 4: 0.1}, {1: 0.2, 4: 0.2}, {1: 0.3, 4: 0.3}]

    asha = StandingDecisions(SuccessiveHalving(min_resource=1, reduction_factor=4))
    assert asha.decide({1: 0.05}, others, "minimize", number=7) is not None  # rung 1
    assert asha.decide({1: 0.05, 2: 0.5}, others, "minimize", number=7) is None  # stands
    decision = asha.decide({1: 0.05, 2: 0.5, 4: 0.5}, others, "minimize", number=7)
    assert decision is not None and decision["stop"]  # rung 4: the worst of 4
    assert len(asked) == 2
    # a rule without decision points (the median rule) decides at every call
    median = StandingDecisions(twiddle.MedianStopping(n_startup_trials=0))
    for _ in range(3):
        assert median.decide({1: 0.0, 2: 0.0, 3: 0.0}, others, "minimize", number=8) is not None
    assert len(asked) == 5
