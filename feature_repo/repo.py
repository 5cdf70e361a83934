"""Everything `feast apply` registers from this folder; sms_assets applies the same list.

Each kind of object is defined in its own module (entities, data_sources, feature_views,
on_demand_feature_views, feature_services) and collected here.
"""

from feature_repo.data_sources import sms_features_source
from feature_repo.entities import message
from feature_repo.feature_services import BY_ID, BY_TEXT
from feature_repo.feature_views import sms_base_features
from feature_repo.on_demand_feature_views import sms_text_features, sms_text_request

ENTITIES = [message]
DATA_SOURCES = [sms_features_source, sms_text_request]
FEATURE_VIEWS = [sms_base_features]
ON_DEMAND_FEATURE_VIEWS = [sms_text_features]
# Each service by id beside its text twin, in the contracts' order.
FEATURE_SERVICES = [
    service for pair in zip(BY_ID.values(), BY_TEXT.values(), strict=True) for service in pair
]
# `feast apply` and `feast plan` register the objects bound to this module's top-level names: each
# service gets one, as if written out by hand.
globals().update({service.name: service for service in FEATURE_SERVICES})
