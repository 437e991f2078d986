"""actionbert: late temporal modeling for 3D CNN action recognition (3D CNN backbone + BERT head).

Kalfaoglu, Kalkan, Alatan, "Late Temporal Modeling in 3D CNN Architectures with BERT for Action Recognition",
ECCV Workshops 2020 (arXiv 2008.01232).
"""

from actionbert.checkpoint import from_pretrained
from actionbert.models import ModelConfig, VideoClassifier, build_model, list_models
from actionbert.weights import load_weights

__version__ = "0.1.0"
__all__ = ["ModelConfig", "VideoClassifier", "build_model", "from_pretrained", "list_models", "load_weights",
           "__version__"]
