"""The host-only scheduler against a fake step function: no model, no arrays."""

import itertools
import random

import pytest

from mlxbatchwhisper.scheduler import Scheduler


class FakeEngine:
    """Runs the scheduler's plans: each request is (name, rows, steps); a step advances every live request."""

    def __init__(self, scheduler: Scheduler, follow_up=None):
        self.scheduler, self.follow_up = scheduler, follow_up or (lambda request: None)
        self.batch: list[list] = []  # [request, steps left] in row order, finished ones until compaction
        self.finished: list = []
        self.live_per_step: list[int] = []
        self.width_per_step: list[int] = []

    def run(self) -> list:
        while True:
            plan = self.scheduler.plan()
            if plan.compact:
                self.batch = [entry for entry in self.batch if entry[1] > 0]
            self.batch += [[request, request[2]] for request in plan.admit]
            if self.scheduler.live == 0:
                assert not any(entry[1] > 0 for entry in self.batch)
                if self.scheduler.idle:
                    return self.finished
                continue
            live = sum(r[1] for r, left in self.batch if left > 0)
            assert live == self.scheduler.live
            self.live_per_step.append(live)
            self.width_per_step.append(sum(r[1] for r, _ in self.batch))
            for entry in self.batch:  # the step
                if entry[1] > 0:
                    entry[1] -= 1
                    if entry[1] == 0:
                        self.scheduler.finish(entry[0])
                        self.finished.append(entry[0])
                        again = self.follow_up(entry[0])
                        if again is not None:
                            self.scheduler.add(again)


def requests(n: int, seed: int, rows=(1,), steps=(1, 30)) -> list[tuple]:
    rng = random.Random(seed)
    return [(f"r{i}", rng.choice(rows), rng.randint(*steps)) for i in range(n)]


@pytest.mark.parametrize("max_rows, rows", [(8, (1,)), (16, (1,)), (10, (5,)), (12, (1, 5)), (3, (1,))])
def test_every_request_runs_once_and_the_batch_stays_full_while_input_remains(max_rows, rows):
    todo = requests(60, seed=max_rows, rows=rows)
    engine = FakeEngine(Scheduler(max_rows, lambda r: r[1], todo))
    done = engine.run()
    assert sorted(done) == sorted(todo)
    biggest = max(rows)
    steps_with_input_left = len(engine.live_per_step) - max(r[2] for r in todo) - 1
    slack = max(1, max_rows // 4) + biggest  # a quarter free before refilling; a request may not fit
    for live in engine.live_per_step[:steps_with_input_left]:
        assert max_rows - slack < live <= max_rows
    for width, live in zip(engine.width_per_step, engine.live_per_step):  # finished rows leave in time
        assert width - live <= max(1, width // 4) + max_rows


def test_requests_added_while_running_join_before_the_source_and_run_once():
    todo = requests(30, seed=1)
    followed = {}

    def follow_up(request):  # like a temperature fallback: every third request goes again, twice at most
        name = request[0]
        depth = name.count("+")
        if int(name[1:].split("+")[0]) % 3 == 0 and depth < 2:
            followed[name + "+"] = len(engine.finished)
            return (name + "+", request[1], 5)
        return None

    engine = FakeEngine(Scheduler(6, lambda r: r[1], todo), follow_up)
    done = engine.run()
    names = [r[0] for r in done]
    assert sorted(n for n in names if "+" not in n) == sorted(r[0] for r in todo)
    assert {n for n in names if "+" in n} == set(followed)
    assert len(names) == len(set(names))


def test_an_oversized_request_runs_alone():
    engine = FakeEngine(Scheduler(4, lambda r: r[1], [("a", 1, 10), ("big", 9, 3), ("b", 1, 2)]))
    done = engine.run()
    assert sorted(r[0] for r in done) == ["a", "b", "big"]
    assert engine.live_per_step.count(9) == 3  # its three steps, with no other live row beside it
    assert all(live <= 4 for live in engine.live_per_step if live != 9)


def test_admission_waits_until_a_quarter_of_the_batch_is_free():
    scheduler = Scheduler(8, lambda r: r[1], [(f"r{i}", 1, 1) for i in range(12)])
    admitted = scheduler.plan().admit
    assert len(admitted) == 8
    scheduler.finish(admitted[0])
    assert scheduler.plan().admit == []  # one free row of eight: not worth reshaping the batch
    scheduler.finish(admitted[1])
    assert [r[0] for r in scheduler.plan().admit] == ["r8", "r9"]


def test_the_source_is_read_lazily():
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield (f"r{i}", 1, 3)

    scheduler = Scheduler(4, lambda r: r[1], source())
    plan = scheduler.plan()
    assert len(plan.admit) == 4 and len(pulled) <= 5


def test_finished_rows_leave_when_a_quarter_of_the_batch_is_finished():
    scheduler = Scheduler(8, lambda r: r[1], [(f"r{i}", 1, 1) for i in range(8)])
    admitted = scheduler.plan().admit
    assert len(admitted) == 8 and scheduler.live == 8
    scheduler.finish(admitted[0])
    assert not scheduler.plan().compact  # one dead row of eight: not yet
    scheduler.finish(admitted[1])
    plan = scheduler.plan()
    assert plan.compact and scheduler.dead == 0


def test_max_rows_must_be_positive():
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        Scheduler(0, lambda r: 1)


def test_upcoming_shows_the_next_requests_in_joining_order_without_taking_them():
    source = iter([("a", 2, 1), ("b", 2, 1), ("c", 3, 1), ("d", 1, 1)])
    scheduler = Scheduler(4, lambda r: r[1], source)
    scheduler.add(("fallback", 1, 1))
    assert [r[0] for r in scheduler.upcoming(5)] == ["fallback", "a", "b"]  # c would make 8 rows
    assert [r[0] for r in scheduler.upcoming(2)] == ["fallback"]
    assert next(source) == ("d", 1, 1)  # pulled only as far as asked: c was looked at, d not
    assert [r[0] for r in scheduler.plan().admit] == ["fallback", "a"]  # still there to admit, in that order
