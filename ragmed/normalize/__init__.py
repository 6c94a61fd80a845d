"""Disease-name normalization against the Manbyo dictionary (see :mod:`ragmed.normalize.model`)."""

from ragmed.normalize.model import DiseaseNormalizer
from ragmed.normalize.results import Mention, NormalizedName
from ragmed.normalize.text import normalize_key, split_names

__all__ = ["DiseaseNormalizer", "Mention", "NormalizedName", "normalize_key", "split_names"]
