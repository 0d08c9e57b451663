"""The verification run says where its seconds go (issue 13: planning time)."""

from planner.trials import verify_run


def test_the_verification_run_splits_its_seconds_into_phases(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(verify_run.time, "monotonic", lambda: clock["t"])

    def at(t, call, *args, rss=None):
        clock["t"] = t
        if rss is not None:
            peak["b"] = rss
        call(*args)

    peak = {"b": 0}
    c = verify_run._Counter(max_val=8, peak=lambda: peak["b"])
    at(10.0, c.on_train_begin, rss=100)  # start-up since t0 = 0: 10 s
    at(11.0, c.on_train_batch_begin, 0)
    at(30.0, c.on_train_batch_end, 0, rss=300)  # the first step (its trace): 19 s
    at(31.0, c.on_train_batch_begin, 1)
    at(34.0, c.on_train_batch_end, 1, rss=350)  # the other steps: 4 s
    at(40.0, c.on_test_batch_end, 0, rss=360)
    at(45.0, c.on_test_batch_end, 1, rss=380)  # validation: 11 s
    at(50.0, c.mark, "end", rss=500)  # checkpoint and the end of train: 5 s
    at(60.0, c.mark, "end", rss=900)  # a second mark keeps the first's time and peak
    assert c.first_step_s == 19.0 and (c.train_batches, c.val_batches) == (2, 2)
    assert c.phases(0.0) == {
        "startup_s": 10.0,
        "first_step_s": 20.0,
        "train_steps_s": 4.0,
        "validation_s": 11.0,
        "checkpoint_s": 5.0,
    }
    # The peak so far at each phase's end (its last batch for the steps and validation):
    # here the checkpoint write set the run's peak.
    assert c.phase_peaks() == {
        "startup": 100,
        "first_step": 300,
        "train_steps": 350,
        "validation": 380,
        "checkpoint": 500,
    }


class _Allocator:
    """A fake of TensorFlow's CPU allocator statistics: in use now, and the peak since the
    last reset."""

    def __init__(self):
        self.current, self.peak, self.resets = 100, 100, 0

    def use(self, n: int) -> None:
        self.current += n
        self.peak = max(self.peak, self.current)

    def free(self, n: int) -> None:
        self.current -= n

    def stats(self):
        return self.current, self.peak

    def reset(self):
        self.resets += 1
        self.peak = self.current
        return True


def test_the_verification_run_records_each_train_steps_tensor_peak():
    alloc = _Allocator()
    c = verify_run._Counter(
        max_val=8, peak=lambda: 0, tensors=alloc.stats, reset_tensors=alloc.reset
    )
    for activations in (900, 1000, 950):  # the same shapes, a different peak per step
        c.on_train_batch_begin(0)
        alloc.use(activations)
        alloc.free(activations)
        c.on_train_batch_end(0)
    assert c.tensor_peaks == [1000, 1100, 1050]  # each step's own, the weights (100) in
    assert alloc.resets == 3


def test_without_allocator_statistics_no_tensor_peaks_are_recorded():
    calls = []
    c = verify_run._Counter(
        max_val=8,
        peak=lambda: 0,
        tensors=lambda: calls.append("stats") or (1, 2),
        reset_tensors=lambda: False,  # this allocator keeps no peak
    )
    for _ in range(2):
        c.on_train_batch_begin(0)
        c.on_train_batch_end(0)
    assert c.tensor_peaks == [] and calls == []
