"""Benchmark metrics (SPEC Sec. 5 "Tasks and metrics"), numpy float64, values as fractions in [0, 1].

* phase recognition: :func:`phase_metrics` (per video, GT-present phases, optional relaxed boundary),
  :func:`edit_score`, :func:`segmental_f1`;
* CholecT50 triplets: :func:`triplet_ap`, :func:`triplet_metrics`, :func:`component_scores`;
* classification: :func:`classification_metrics`, :func:`accuracy`, :func:`macro_f1`, :func:`multilabel_map`;
* skill regression: :func:`skill_metrics`, :func:`mae`, :func:`spearman`;
* segmentation: :func:`segmentation_metrics`; depth: :func:`depth_metrics`;
* confidence intervals: :func:`bootstrap_ci`.
"""

from unisurg.evaluation.metrics.average_precision import average_precision
from unisurg.evaluation.metrics.bootstrap import (
                                            bootstrap_ci,
                                            bootstrap_surgmotion,
                                            resample_indices,
                                            surgmotion_resample_indices,
)
from unisurg.evaluation.metrics.classification import (
                                            accuracy,
                                            classification_metrics,
                                            macro_f1,
                                            multilabel_map,
                                            per_class_scores,
)
from unisurg.evaluation.metrics.depth import c3vd_depth_to_mm, depth_metrics
from unisurg.evaluation.metrics.edit import (
                                            edit_score,
                                            levenshtein,
                                            segmental_f1,
                                            segments,
)
from unisurg.evaluation.metrics.phase import phase_metrics, strict_phase_scores
from unisurg.evaluation.metrics.regression import (
                                            average_ranks,
                                            fisher_z_mean,
                                            mae,
                                            regression_metrics,
                                            skill_metrics,
                                            spearman,
)
from unisurg.evaluation.metrics.relaxed import (
                                            CHOLEC80_PHASES,
                                            M2CAI16_PHASES,
                                            relaxed_correct,
                                            relaxed_phase_scores,
)
from unisurg.evaluation.metrics.segmentation import dice, segmentation_metrics
from unisurg.evaluation.metrics.triplet import (
                                            IVT_COMPONENTS,
                                            component_classes,
                                            component_scores,
                                            load_ivt_mapping,
                                            null_triplets,
                                            triplet_ap,
                                            triplet_metrics,
)

__all__ = [
    "CHOLEC80_PHASES", "IVT_COMPONENTS", "M2CAI16_PHASES",
    "accuracy", "average_precision", "average_ranks", "bootstrap_ci", "bootstrap_surgmotion", "c3vd_depth_to_mm", "classification_metrics",
    "component_classes", "component_scores", "depth_metrics", "dice", "edit_score", "fisher_z_mean", "levenshtein",
    "load_ivt_mapping", "macro_f1", "mae", "multilabel_map", "null_triplets", "per_class_scores", "phase_metrics",
    "regression_metrics", "relaxed_correct", "relaxed_phase_scores", "resample_indices", "segmental_f1",
    "segmentation_metrics", "segments", "skill_metrics", "spearman", "strict_phase_scores", "surgmotion_resample_indices", "triplet_ap",
    "triplet_metrics",
]
