"""The runtime that ships inside every package: numpy and one inference runtime, nothing else.

Never import tensorflow, click, boto3 or the rest of edgemaas from here: this folder is copied verbatim into Lambda
zips and edge bundles.
"""

from .errors import ModelLoadError, RequestError
from .manifest import MANIFEST_NAME, Manifest, ModelFile, TensorSpec, read_manifest
from .model import ServingModel, load_model

__all__ = [
    "MANIFEST_NAME", "Manifest", "ModelFile", "ModelLoadError", "RequestError", "ServingModel", "TensorSpec",
    "load_model", "read_manifest",
]
