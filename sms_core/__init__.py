"""sms_core: the product's heart, below every door. No Dagster, no FastAPI.

The feature schema and the one function that computes it, the contracts Feast serves them by, the
model's input, training, scoring, metrics and gate, the model store, the prediction path that the API
and the asset checks both call, and the plumbing they share (settings, service URLs, Postgres helpers,
the Feast configuration, embedded servers). `feature_repo/` imports only this package; `sms_api/` and
`sms_assets/defs/` import down into it and never each other (pyproject.toml, [tool.importlinter]).
"""
