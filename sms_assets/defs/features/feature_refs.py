"""What Feast reads by: every feature of the batch view and of its request-time twin, by reference.

A module of its own, importing neither Feast nor scikit-learn, so that a check can name them without
importing the serving path, and so that naming them leaves the feature code (and its version) as is.
"""

from sms_assets.defs.features.schema import FEATURE_NAMES
from sms_assets.lib.feast_config import FEATURE_VIEW, TEXT_FEATURE_VIEW

VIEW_FEATURES = [f"{FEATURE_VIEW}:{name}" for name in FEATURE_NAMES]
TEXT_VIEW_FEATURES = [f"{TEXT_FEATURE_VIEW}:{name}" for name in FEATURE_NAMES]
