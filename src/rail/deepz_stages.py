"""Registers pz-rail-deepz's stages with RAIL when RAIL discovers its plugins.

``rail.stages.import_and_attach_all()`` (used by ``rail.interactive``, ``rail info`` and
``from rail.stages import *``) imports every top-level module of the ``rail`` namespace and then
lists the stages defined so far. ``rail.deepz`` itself exports its stages lazily, so that the core
and the simulation package import without RAIL's stage machinery; this module is what RAIL imports
to define them.
"""

from rail.creation.engines.deepz_sims import DeepzSimCreator
from rail.estimation.algos.deepz import (DeepzEstimator, DeepzInformer, DeepzTargetInformer,
                                        DeepzTargetTransferInformer, DeepzTransferInformer)
from rail.evaluation.deepz_evaluator import DeepzEvaluator

__all__ = ["DeepzInformer", "DeepzTransferInformer", "DeepzTargetInformer", "DeepzTargetTransferInformer",
           "DeepzEstimator", "DeepzSimCreator", "DeepzEvaluator"]
