import math

import numpy as np
import pytest
import torch

from harness.config import TrainConfig, stable_hash
from harness.provision.training import batch_offsets, lr_at, train
from harness.provision.weights import WeightCache
from tests.toys import CausalToy

CFG = TrainConfig(seq_len=16, batch_size=4, train_tokens=64 * 40, lr=1e-2)


def _data(n=5000, v=20, seed=0):
    return np.random.default_rng(seed).integers(0, v, size=n)


def test_schedule_warms_up_then_decays():
    lrs = [lr_at(s, CFG) for s in range(CFG.steps)]
    warm = max(1, round(CFG.warmup_frac * CFG.steps))
    assert lrs[warm - 1] == pytest.approx(CFG.lr)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :]))
    assert lrs[-1] >= CFG.lr * CFG.min_lr_ratio - 1e-12


def test_data_order_depends_on_seed_only():
    assert (batch_offsets(1000, CFG, 3) == batch_offsets(1000, CFG, 3)).all()
    assert not (batch_offsets(1000, CFG, 3) == batch_offsets(1000, CFG, 4)).all()


def test_too_short_split_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than seq_len"):
        batch_offsets(10, CFG, 0)


def test_training_reduces_loss_and_logs_every_step():
    torch.manual_seed(0)
    res = train(CausalToy(20), _data(), CFG, seed=0, device=torch.device("cpu"))
    assert res.steps == CFG.steps == len(res.losses) == len(res.grad_norms)
    assert res.tokens == CFG.steps * CFG.batch_size * CFG.seq_len
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    assert not res.diverged


def test_nan_stops_training_and_marks_divergence():
    class Exploding(CausalToy):
        def forward(self, ids):
            out = super().forward(ids)
            return out * float("nan") if self.training and self._calls() >= 3 else out

        n = 0

        def _calls(self):
            self.n += 1
            return self.n

    res = train(Exploding(20), _data(), CFG, seed=0, device=torch.device("cpu"))
    assert res.diverged and res.diverged_step == 2
    assert res.steps == 2 and not math.isfinite(res.losses[-1])


def test_cache_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CausalToy(20)
    res = train(model, _data(), CFG, seed=0, device=torch.device("cpu"))
    key = stable_hash({"x": 1})
    cache = WeightCache(tmp_path)
    cache.save(model, res, key)
    fresh = CausalToy(20)
    loaded = cache.load(fresh, key)
    assert loaded is not None and loaded.cached and loaded.losses == res.losses
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert cache.load(CausalToy(20), "missing") is None


def test_corrupt_cache_entry_is_retrained_not_trusted(tmp_path):
    model = CausalToy(20)
    key = "k"
    cache = WeightCache(tmp_path)
    cache.save(model, train(model, _data(), CFG, 0, torch.device("cpu")), key)
    (tmp_path / "weights" / f"{key}.safetensors").write_bytes(b"garbage")
    assert cache.load(CausalToy(20), key) is None


def test_config_hash_is_stable_and_sensitive():
    a = {"model": "x", "train": CFG.to_dict()}
    assert stable_hash(a) == stable_hash(dict(reversed(list(a.items()))))
    assert stable_hash(a) != stable_hash({**a, "seed": 1})
