"""The model shipped inside the package (issue 5): it loads offline, says what it is, and samples
with its own default settings — the few-step setting its card measures."""

import numpy as np
import pytest

from ead.pipeline import EAD, available_models

pytestmark = pytest.mark.skipif("qm9" not in available_models(), reason="no shipped QM9 model")


@pytest.fixture(scope="module")
def shipped():
    return EAD.from_pretrained("qm9", device="cpu")


def test_shipped_model_describes_itself(shipped):
    cfg = shipped.config
    assert cfg.dataset == "qm9" and list(cfg.atom_types) == [1, 6, 7, 8, 9] and cfg.window == 9
    card = shipped.card
    assert card["training_steps"] > 0 and card["total_training_steps"] >= card["training_steps"]
    # the default sampler is the card's: adaptive (λ = 0.8, w = 2), 51 ancestral moves, four Langevin
    # corrector steps (r = 0.5) after each move that ends at t ≤ 200: under 100 network calls
    d = shipped.sampler_defaults
    assert (d["sampler"], d["steps"], d["update"], d["async_ratio"], d["history"], d["corrector_steps"],
            d["corrector_snr"], d["corrector_below"]) == ("adaptive", 51, "ancestral", 0.8, 2, 4, 0.5, 200)


def test_shipped_model_samples_with_its_defaults(shipped):
    arrays, settings = shipped.sample_arrays(3, seed=0, num_atoms=9)
    assert settings["sampler"] == "adaptive" and settings["steps"] == 51
    assert settings["corrector_steps"] == 4 and settings["corrector_below"] == 200
    assert "update" not in settings   # ancestral: the default rule
    # 51 moves, four correctors after each of the ~10 that end at t ≤ 200, the adaptive tail
    assert 92 <= settings["network_calls"] <= 100
    for pos, z in arrays:
        assert pos.shape == (9, 3) and np.isfinite(pos).all()
        assert set(z.tolist()) <= {1, 6, 7, 8, 9}
        assert 0.5 < np.linalg.norm(pos - pos.mean(0), axis=1).max() < 15   # a molecule, not noise


def test_shipped_defaults_take_every_sampler_option(shipped):
    # the defaults pin no setting that another option makes invalid: SNR spacing (whose stalled
    # atoms stop for a stride, stall lag 0) and every sampler build on top of them
    for sampler in ("synchronous", "manual", "adaptive"):
        for spacing in ("uniform", "snr"):
            s = shipped.make_schedule(sampler, spacing=spacing).settings()
            assert s["spacing"] == spacing and s["steps"] == 51 and s["corrector_below"] == 200
    assert shipped.make_schedule("adaptive", spacing="snr").settings()["stall_lag"] == 0
