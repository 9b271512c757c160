"""Prompt router: predicts from request text how likely the strong (upstream) model is needed."""

from classifier.model import DEFAULT_MODEL_PATH, ModelLoadError, RouterModel, load_model

__all__ = ["DEFAULT_MODEL_PATH", "ModelLoadError", "RouterModel", "load_model"]
