"""Models of the method: backbones, pooling heads (TGAP / BERT), feature-reduction blocks, the classifier."""

from actionbert.models.backbones import BACKBONES, BackboneSpec, VideoResNetBackbone, get_backbone_spec
from actionbert.models.classifier import (REFERENCE_MODELS, ModelConfig, VideoClassifier, build_model,
                                          count_parameters, feature_size, list_models, num_tokens)
from actionbert.models.heads import HEADS, BertHead, ReferenceNorm, TGAPHead
from actionbert.models.reduction import REDUCTIONS

__all__ = [
    "BACKBONES", "HEADS", "REDUCTIONS", "REFERENCE_MODELS", "BackboneSpec", "BertHead", "ModelConfig",
    "ReferenceNorm", "TGAPHead", "VideoClassifier", "VideoResNetBackbone", "build_model", "count_parameters",
    "feature_size", "get_backbone_spec", "list_models", "num_tokens",
]
