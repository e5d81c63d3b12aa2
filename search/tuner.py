"""KerasTuner pieces: the HyperModel and constraint-aware oracles and tuners.

Every built-in oracle draws new points through `Oracle._random_values()`; the budget
mixin screens them with the exact cost model there, so an over-budget candidate never
becomes a trial (no slot of `max_trials`, no failure count, no model build): it is shrunk
by random steps until it fits (`search.budget.shrink`), landing just under the budget, or
drawn again where the shrunk point was tried already.
Bayesian optimization's own proposals come from `populate_space`: an over-budget one
is repaired onto the budget (`search.budget.repair`), not swapped for a random
sample. Each finished trial writes `records/trial_ID.json` (params, multiply-adds,
validation accuracy, train time, worker) beside the KerasTuner project. A user error in a
trial (an unreadable image, a record that cannot be written) ends the search, as
`FatalTrialError`, instead of counting as a failed trial.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import time
from pathlib import Path

import keras_tuner as kt
import tensorflow as tf
from keras_tuner.src.engine.tuner_utils import SaveBestEpoch

from inception_keras import NetworkSpec, build_model, network_cost
from inception_keras.child_scoring import STATISTICS_FILE, ChildScorer, save_statistics
from inception_keras.utils.atomic import atomic_write_text
from inception_keras.data import data_error
from inception_keras.utils.errors import UserError
from inception_keras.utils.image_header import MAX_IMAGE_PIXELS
from inception_keras.inherit import narrow, recalibrate_batch_norm
from inception_keras.train import TrainConfig, compile_model, monitor_name

from search.budget import PointCost, cheapest, repair, shrink
from search.report import SearchError
from search.space import REDUCE_FIELDS, SearchSpace

TUNERS = ("random", "bayesian", "hyperband")


class FatalTrialError(kt.errors.FatalError):
    """Carries a UserError out of KerasTuner's trial loop, which would count it as a failed trial and go on."""

    def __init__(self, error: UserError):
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass
class Parent:
    """A trained model every trial inherits its weights from (`inception_keras.inherit.narrow`), then re-estimates
    batch-norm statistics on `recalibrate_batches` training batches and trains `steps` steps (None: the epochs; 0:
    none, the recalibrated model is scored as it is)."""

    model: object  # keras.Model
    spec: NetworkSpec
    source: str
    recalibrate_batches: int = 0
    steps: int | None = None
    importance: str = "l1"  # "first": an elastic parent, whose children are its first channels
    trained: dict | None = None  # an elastic parent's widths {(module, width field): choices it was trained at}

    def restrict(self, space: SearchSpace) -> tuple[SearchSpace, int]:
        """`space` without the reduce widths that cannot inherit (0 where the parent has a bottleneck, any other
        where it has none) and, from an elastic parent, without the widths it was not trained at (a width it did
        not vary: its own only), and how many of its points that leaves out."""
        modules = self.spec.modules_by_name()
        dimensions = []
        for dim in space.dimensions:
            values = dim.values
            if self.trained is not None:
                trained = self.trained.get((dim.module, dim.width), (getattr(modules[dim.module], dim.width),))
                values = tuple(value for value in values if value in trained)
                if not values:
                    raise SearchError(f"no {dim.name} of the space is a width the elastic parent {self.source} was "
                                      f"trained at: the space's choices {list(dim.values)}, the parent's "
                                      f"{list(trained)}")
            if dim.width in REDUCE_FIELDS:
                bottleneck = getattr(modules[dim.module], dim.width) > 0
                values = tuple(value for value in values if (value > 0) == bottleneck)
                if not values:
                    raise SearchError(f"no {dim.name} of the space can inherit from {self.source}: its choices "
                                      f"{list(dim.values)} are all {'0' if bottleneck else 'above 0'}, and the parent "
                                      f"has {'a' if bottleneck else 'no'} bottleneck there")
            dimensions.append(dataclasses.replace(dim, values=values))
        restricted = dataclasses.replace(space, dimensions=tuple(dimensions))
        return restricted, space.size() - restricted.size()


def latency_fields(spec: NetworkSpec, budget, latency) -> dict:
    """A trial's (or the baseline's) latency under a latency budget: measured in the budget's runtime (its
    inference model, batch 1), predicted by `latency`, and whether the measurement is over the budget."""
    from inception_keras.export.latency import measure

    inference = spec.without_aux()
    timing = measure(inference, budget.runtime)
    return {"latency_ms": round(timing.median_ms, 4), "latency_p90_ms": round(timing.p90_ms, 4),
            "predicted_latency_ms": round(latency(inference), 4),
            "over_budget": bool(timing.median_ms > budget.max_latency_ms)}


class InceptionHyperModel(kt.HyperModel):
    """hp -> `space.spec_for` -> `build_model` (or `narrow` of the parent) -> `compile_model` (aux losses weighted as
    the spec says); with a parent, `fit` recalibrates batch norm first."""

    def __init__(self, space: SearchSpace, config: TrainConfig, steps_per_epoch: int, defaults: dict,
                 parent: Parent | None = None):
        super().__init__(name=space.name)
        self.space, self.config, self.steps_per_epoch, self.defaults = space, config, steps_per_epoch, defaults
        self.parent = parent
        self.recalibration_data = None  # `fix_recalibration_batches`: the same batches for every trial
        self.scorer = None  # the parent's ChildScorer (`_scorer`), for trials scored untrained

    def declare(self, hp: kt.HyperParameters) -> dict:
        return {dim.name: hp.Choice(dim.name, list(dim.values), ordered=True, default=self.defaults[dim.name])
                for dim in self.space.dimensions}

    def build(self, hp):
        return self.build_spec(self.space.spec_for(self.declare(hp)))

    def build_spec(self, spec: NetworkSpec):
        """The compiled model of `spec` as a trial starts it: fresh, or inherited from the parent."""
        if self.parent is None:
            model = build_model(spec, precision=self.config.precision)
        else:
            model = narrow(self.parent.model, self.parent.spec, spec, importance=self.parent.importance,
                           fresh_heads=True, precision=self.config.precision)
        compile_model(model, spec, self.config, self.parent.steps if self.parent and self.parent.steps else
                      self.steps_per_epoch)
        return model

    def fix_recalibration_batches(self, train_ds) -> None:
        """Recalibrate every trial and execution on the same batches: the first ones `train_ds` gives, kept (a
        shuffled pipeline gives others each time, and the statistics of a batch norm after another depend on
        which images shared a batch, so two executions of one trial could score apart)."""
        if self.parent is not None and self.parent.recalibrate_batches and hasattr(train_ds, "take"):
            data = train_ds.take(self.parent.recalibrate_batches).cache()
            for _ in data:  # fill the cache now
                pass
            self.recalibration_data = data

    def fit(self, hp, model, x, *args, **kwargs):
        if self.parent is not None:
            recalibrate_batch_norm(model, self.recalibration_data if self.recalibration_data is not None else x,
                                   self.parent.recalibrate_batches)
            if self.parent.steps == 0:
                return self._score_untrained(model, kwargs)
            if self.parent.steps:  # the same steps however many batches an epoch has
                x = x.repeat() if hasattr(x, "repeat") else x
                kwargs = {**kwargs, "epochs": 1, "steps_per_epoch": self.parent.steps}
        return model.fit(x, *args, **kwargs)

    def score_masked(self, hp, statistics_path: Path, x, *args, **kwargs) -> dict | None:
        """A trial scored untrained (`--steps 0`) whose point the parent's `ChildScorer` can give: its validation
        logs (`val_` names), scored through masks on the parent with no model built, and its batch-norm statistics
        saved at `statistics_path` (`child_scoring.save_statistics`: what the trial's model is, with the parent and
        its spec); else None."""
        if self.parent is None or self.parent.steps != 0:
            return None
        spec = self.space.spec_for(self.declare(hp))
        scorer = self._scorer(x, kwargs["validation_data"])
        if not scorer.supports(spec):
            return None
        scores = scorer.score(spec)
        save_statistics(statistics_path, scorer.statistics())
        prefix = "predictions_" if spec.aux_heads else ""
        return {f"val_{prefix}{name}": float(value) for name, value in scores.items()}

    def _scorer(self, train_ds, val_ds):
        """The parent's `ChildScorer`, made at the first trial scored untrained (recalibrating on the batches every
        trial uses, evaluating on `val_ds`)."""
        if self.scorer is None:
            self.scorer = ChildScorer(self.parent.model, self.parent.spec, self.recalibration_data if
                                      self.recalibration_data is not None else train_ds,
                                      self.parent.recalibrate_batches, val_ds, self.config.label_smoothing,
                                      self.parent.importance)
        return self.scorer

    @staticmethod
    def _score_untrained(model, kwargs) -> dict:
        """Steps 0: the inherited, recalibrated model scored as it is (its validation metrics, `val_` names), and
        saved as the trial's checkpoint as a trained one would be."""
        scores = model.evaluate(kwargs["validation_data"], verbose=0, return_dict=True)
        logs = {f"val_{name}": float(value) for name, value in scores.items()}
        for callback in kwargs.get("callbacks", []):
            if isinstance(callback, SaveBestEpoch):
                callback.set_model(model)
                callback.on_epoch_end(0, logs)
        return logs


    def score(self, spec: NetworkSpec, train_ds, val_ds, epochs: int, executions: int = 1) -> list[float]:
        """`spec` trained and scored as a trial is (`build_spec`, `fit`): its best validation accuracy, once per
        execution (the width-multiplier baseline, which is no point of the space)."""
        monitor, scores = monitor_name(spec), []
        for _ in range(executions):
            model = self.build_spec(spec)
            history = self.fit(None, model, train_ds, validation_data=val_ds, epochs=epochs, verbose=0)
            logs = history.history if hasattr(history, "history") else {key: [value] for key, value in
                                                                         history.items()}
            scores.append(float(max(logs.get(monitor, [float("nan")]))))
        return scores


MAX_TRIED_SHRINKS = 200


class BudgetMixin:
    """Screens every newly drawn point with the exact cost model before a trial exists."""

    def __init__(self, *args, space: SearchSpace, point_cost: PointCost | None = None, max_attempts: int = 10_000,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.space, self.point_cost, self.max_attempts = space, point_cost or PointCost(space), max_attempts
        self.screened = self.rejected = self.repaired = self.draws = 0
        self.exhausted = False

    def _random_values(self):
        tried = 0  # draws shrunk onto points tried already: where every draw shrinks onto a few points, stop soon
        for self.draws in range(1, self.max_attempts + 1):
            values = super()._random_values()
            if values is None:  # KerasTuner found no new point (too many duplicates)
                return None
            self.screened += 1
            if self.point_cost.within(values):
                return values
            self.rejected += 1
            values = {**values, **shrink(values, self.point_cost, random.Random(self._seed_state))}
            if not self._duplicate(values):
                self.repaired += 1
                return values
            tried += 1
            if tried == MAX_TRIED_SHRINKS:
                break
        self.exhausted = True
        return None

    def get_state(self):
        return {**super().get_state(), "budget_screened": self.screened, "budget_rejected": self.rejected,
                "budget_repaired": self.repaired}

    def set_state(self, state):
        super().set_state(state)
        self.screened = state.get("budget_screened", 0)
        self.rejected = state.get("budget_rejected", 0)
        self.repaired = state.get("budget_repaired", 0)


class BudgetRandomSearchOracle(BudgetMixin, kt.oracles.RandomSearchOracle):
    pass


class BudgetHyperbandOracle(BudgetMixin, kt.oracles.HyperbandOracle):
    pass


class BudgetBayesianOracle(BudgetMixin, kt.oracles.BayesianOptimizationOracle):
    def populate_space(self, trial_id):
        result = super().populate_space(trial_id)
        values = result.get("values")
        if result.get("status") == "RUNNING" and values and not self.point_cost.within(values):
            self.repaired += 1
            result = {**result, "values": {**values, **repair(values, self.point_cost)}}
        return result


class RecordingMixin:
    """Writes a JSON record per finished trial and prints a one-line progress report."""

    def __init__(self, *args, space: SearchSpace, records_dir: Path, dataset: str = "",
                 max_image_pixels: int = MAX_IMAGE_PIXELS, **kwargs):
        self.space, self.records_dir, self.dataset = space, Path(records_dir), dataset
        self.max_image_pixels = max_image_pixels
        super().__init__(*args, **kwargs)

    def _train(self, trial, *args, **kwargs):
        try:
            return super().run_trial(trial, *args, **kwargs)
        except tf.errors.OpError as error:
            problem = data_error(self.dataset, error, self.max_image_pixels)
            if problem is None:
                raise
            raise FatalTrialError(problem) from None

    def _write_record(self, record: dict) -> None:
        path = self.records_dir / f"trial_{record['trial_id']}.json"
        try:
            atomic_write_text(path, json.dumps(record, indent=1))
        except OSError as error:
            raise FatalTrialError(SearchError(f"cannot write the trial record {path}: "
                                              f"{error.strerror or error}")) from None

    def run_trial(self, trial, *args, **kwargs):
        values = {dim.name: trial.hyperparameters.get(dim.name) for dim in self.space.dimensions}
        spec = self.space.spec_for(values)
        cost = network_cost(spec)
        start = time.perf_counter()
        histories = self._train(trial, *args, **kwargs)
        seconds = time.perf_counter() - start
        monitor = monitor_name(spec)
        scores = [max(h.history.get(monitor, [float("nan")])) if hasattr(h, "history") else h[monitor]
                  for h in histories]
        accuracy = statistics.fmean(scores) if scores else float("nan")
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        parent = getattr(self.hypermodel, "parent", None)
        inference = self.space.budget.model == "inference"
        point_cost = getattr(self.oracle, "point_cost", None)
        latency = latency_fields(spec, self.space.budget, point_cost.latency) if point_cost is not None and \
            self.space.budget.max_latency_ms is not None else {}
        record = {
            "trial_id": trial.trial_id, "worker": self.tuner_id, "values": values,
            "params": cost.inference_params if inference else cost.total_params,
            "macs": cost.inference_macs if inference else cost.total_macs,
            "inference_params": cost.inference_params, "inference_macs": cost.inference_macs,
            "total_params": cost.total_params, "total_macs": cost.total_macs,
            "val_accuracy": accuracy, "val_accuracy_std": spread, "executions": len(scores),
            "train_seconds": round(seconds, 2), "epochs": kwargs.get("epochs"),
            "steps": parent.steps if parent else None, "parent": parent.source if parent else None,
            "spec": spec.to_dict(), **latency,
        }
        self._write_record(record)
        shown = f"{accuracy:.4f} ± {spread:.4f} ({len(scores)})" if len(scores) > 1 else f"{accuracy:.4f}"
        measured = f", {latency['latency_ms']:.3f} ms measured ({latency['predicted_latency_ms']:.3f} predicted" \
                   f"{'; OVER the budget' if latency['over_budget'] else ''})" if latency else ""
        print(f"[search] trial {trial.trial_id} ({self.tuner_id}): {monitor} {shown}, "
              f"{record['params']:,} params, {record['macs']:,} multiply-adds{measured}, {seconds:.1f} s", flush=True)
        return histories


class BudgetTuner(RecordingMixin, kt.Tuner):
    def _build_and_fit_model(self, trial, *args, **kwargs):
        """A trial scored through masks (`InceptionHyperModel.score_masked`) builds no model: its checkpoint is the
        child's batch-norm statistics (`STATISTICS_FILE`), which `driver.export_best` gives the child narrowed from
        the parent again."""
        path = Path(self.get_trial_dir(trial.trial_id)) / STATISTICS_FILE
        logs = self.hypermodel.score_masked(trial.hyperparameters, path, *args, **kwargs)
        return logs if logs is not None else super()._build_and_fit_model(trial, *args, **kwargs)


class BudgetHyperband(RecordingMixin, kt.tuners.Hyperband):
    def __init__(self, *args, space: SearchSpace, records_dir: Path, oracle, hypermodel, dataset: str = "",
                 max_image_pixels: int = MAX_IMAGE_PIXELS, **kwargs):
        # Hyperband's own __init__ only makes a HyperbandOracle; keep its run_trial and weight loading.
        self.space, self.records_dir, self.dataset = space, Path(records_dir), dataset
        self.max_image_pixels = max_image_pixels
        kt.Tuner.__init__(self, *args, oracle=oracle, hypermodel=hypermodel, **kwargs)


def make_tuner(kind: str, space: SearchSpace, config: TrainConfig, steps_per_epoch: int, directory: Path,
               max_trials: int, epochs: int, seed: int = 0, overwrite: bool = False, initial_points: int | None = None,
               max_attempts: int = 10_000, distribution_strategy=None, dataset: str = "", parent: Parent | None = None,
               executions_per_trial: int = 1, max_image_pixels: int = MAX_IMAGE_PIXELS,
               point_cost: PointCost | None = None):
    """A tuner whose oracle screens candidates by the space's budget; `directory/kt` holds its project.

    `dataset` (the `load_data` name) and its `max_image_pixels` let a trial that fails reading it name the
    unreadable image. With a `parent` every trial inherits its weights (the space must hold only points that
    can: `Parent.restrict`).
    A trial trains `executions_per_trial` times; its score is the mean. `point_cost` screens the candidates
    (default: the space's params and multiply-adds budget; a latency budget needs one with a predictor).
    """
    if kind not in TUNERS:
        raise ValueError(f"tuner must be one of {', '.join(TUNERS)}; got {kind!r}")
    point_cost = point_cost or PointCost(space)
    defaults = cheapest(point_cost)
    hypermodel = InceptionHyperModel(space, config, steps_per_epoch, defaults, parent)
    hp = kt.HyperParameters()
    hypermodel.declare(hp)
    objective = kt.Objective(monitor_name(space.base), "max")
    # KerasTuner's oracle takes a seed of 0 for none (`seed or random.randint(1, 10000)`): 0, the default, would
    # draw other points on every run; the oracle gets seed + 1
    common = dict(objective=objective, seed=seed + 1, hyperparameters=hp, tune_new_entries=False, space=space,
                  point_cost=point_cost, max_attempts=max_attempts)
    if kind == "random":
        oracle = BudgetRandomSearchOracle(max_trials=max_trials, **common)
    elif kind == "bayesian":
        points = initial_points or max(2, min(3 * len(space.dimensions), max_trials // 2))
        oracle = BudgetBayesianOracle(max_trials=max_trials, num_initial_points=points, **common)
    else:
        oracle = BudgetHyperbandOracle(max_epochs=epochs, factor=3, **common)
        oracle.max_trials = max_trials
    tuner_class = BudgetHyperband if kind == "hyperband" else BudgetTuner
    return tuner_class(oracle=oracle, hypermodel=hypermodel, directory=str(directory), project_name="kt",
                       overwrite=overwrite, space=space, records_dir=Path(directory) / "records",
                       distribution_strategy=distribution_strategy, dataset=dataset,
                       max_image_pixels=max_image_pixels, executions_per_trial=executions_per_trial)
