"""The Feast feature repository for sms_assets: entities, sources, views and services."""
