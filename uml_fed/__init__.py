"""uml-fed: federated unpaired multimodal learning for Earth observation.

Per-modality private projections f_k, one shared backbone g, post-hoc BN calibration (Algorithms 1-3
of "Collaborative Unpaired Multimodal Learning for Image Classification"), on Flower.
"""

__version__ = "0.1.0"
