"""Training: the generator (Algorithm 1, `train`) and the property predictor (`train_predictor`),
both driven by one loop (loop.py) with one checkpoint format (checkpoint.py) and one log (log.py).

    config.py      TrainConfig: a run's settings        data.py      the molecules a run trains on
    generator.py   the generator's run on Fabric        predictor.py the property predictor's run
    loop.py        the shared loop and run clock        checkpoint.py checkpoints, --init-from widening
    card.py        the model card, lineage, export      log.py       log.csv and TensorBoard

Training sits above the `EAD` model object (pipeline.py): a run exports its EMA weights as an EAD
model folder and samples from it to measure stability while training; the model object never
trains, so nothing below imports this package.
"""

from .card import export_checkpoint
from .checkpoint import Checkpointer
from .config import TrainConfig
from .generator import (GradNormHistory, clip_grad_norm_, precision_warning, sample_metrics, train,
                        validation_loss)
from .loop import RunClock
from .predictor import PredictorTrainConfig, train_predictor

__all__ = ["Checkpointer", "GradNormHistory", "PredictorTrainConfig", "RunClock", "TrainConfig",
           "clip_grad_norm_", "export_checkpoint", "precision_warning", "sample_metrics", "train",
           "train_predictor", "validation_loss"]
