"""actionbert: late temporal modeling for 3D CNN action recognition (3D CNN backbone + BERT head).

Kalfaoglu, Kalkan, Alatan, "Late Temporal Modeling in 3D CNN Architectures with BERT for Action Recognition",
ECCV Workshops 2020 (arXiv 2008.01232).
"""

from actionbert.models import ModelConfig, VideoClassifier, build_model, list_models

__version__ = "0.1.0"
__all__ = ["ModelConfig", "VideoClassifier", "build_model", "list_models", "__version__"]
