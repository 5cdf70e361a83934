from feast import Entity, ValueType

message = Entity(
    name="message",
    join_keys=["message_id"],
    value_type=ValueType.INT64,
    description="One SMS message, identified by its stable message_id.",
)
