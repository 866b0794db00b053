"""Property predictors in one place (docs/method.md §9): train one on QM9 and score conditional
generation with it. The pieces live in their layers: the network and `Predictor` in
model/predictor.py, the score `property_mae` in metrics/property.py, training in train/predictor.py.

EDM's protocol: a predictor of one property is trained on the *first* half of QM9's training
split (the conditional generator trains on the second), so it never saw the generator's
molecules; a conditional model is then asked for molecules with given property values and scored
by the MAE between the values asked for and the predictor's values for what it made. The
predictor's own MAE on QM9's test split is the protocol's lower bound.

    ead predictor --property alpha --run-dir runs/predictor-alpha      # train (resumable)
    ead sample --model runs/cond-alpha/model -n 1000 -o cond.sdf         # targets in each record
    ead evaluate cond.sdf --predictor runs/predictor-alpha/model         # property MAE
"""

from .metrics.property import property_mae, size_means
from .model.predictor import Predictor, PredictorConfig, build_predictor
from .train.predictor import PredictorTrainConfig, train_predictor

__all__ = ["Predictor", "PredictorConfig", "PredictorTrainConfig", "build_predictor", "property_mae",
           "size_means", "train_predictor"]
