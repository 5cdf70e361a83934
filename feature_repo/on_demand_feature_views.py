import inspect

from feast import Field, OnDemandFeatureView, RequestSource
from feast.types import String

from feature_repo.feature_views import sms_base_features

# The text of a message scored at request time, before it has an id or a row in any table.
sms_text_request = RequestSource(
    name="sms_text_request",
    schema=[Field(name="text", dtype=String)],
    description="The text of a new message, sent with the prediction request.",
)


def text_features(inputs: dict[str, list]) -> dict[str, list]:
    """The batch features of each request's text, computed by the function that built the batch table
    (compute_features is feature_columns in a DataFrame)."""
    # Feast keeps this function's source in the registry and re-executes it in a bare namespace when a
    # store loads the view, so the import lives in the body: the logic itself stays in one module.
    from sms_core.features.compute import feature_columns

    return feature_columns(inputs["text"])


# Built from the class rather than the @on_demand_feature_view decorator, which renames the function's
# module to __main__ so that dill copies it by value; here dill refers to this importable module instead.
sms_text_features = OnDemandFeatureView(
    name="sms_text_features",
    sources=[sms_text_request],
    # The batch view's own fields, so a model trained on sms_base_features reads these by the same names.
    schema=[Field(name=f.name, dtype=f.dtype) for f in sms_base_features.features],
    udf=text_features,
    udf_string=inspect.getsource(text_features),
    # Python mode hands the UDF plain lists: for one message it is half the time of pandas mode, which
    # converts the request to Arrow and pandas and back.
    mode="python",
    # Feast 0.67 compares on-demand views without their output schema (OnDemandFeatureView.__eq__), so
    # a change of fields alone would never reach the registry; naming them here makes `feast apply`
    # (and the feast_registry asset) see it.
    description="sms_base_features computed at request time from a new message's text: "
    + ", ".join(f"{f.name} ({f.dtype})" for f in sms_base_features.features),
)
