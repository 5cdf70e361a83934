"""sms_assets: a Dagster asset graph running a Feast feature store for an SMS spam classifier.

The definitions are in `sms_assets.definitions` (`-m sms_assets.definitions`); importing this package
loads none of them. The product's Dagster-free heart is `sms_core`, which the prediction API (`sms_api`)
imports without this package.
"""
