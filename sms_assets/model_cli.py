"""`sms-assets model`: the kept model versions, and moving the served pointer by hand.

`rollback` serves again the version served before the current one, in one atomic pointer move, and
withdraws the one it leaves (served_model will not promote it again); `promote VERSION` serves a kept
version on purpose. Both record a materialization of served_model in the Dagster instance, so the UI
shows which version is served and why, and running prediction services switch within a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sms_core.model.store import ModelStore

# The model store (joblib, scikit-learn) and metrics are imported when a `model` command runs, not by
# every `sms-assets` command that merely builds the parser.


def add_commands(commands: Any, resources: Callable[[], dict[str, Any]]) -> None:
    """Register `model list | rollback | promote VERSION` on the CLI's sub-parsers."""
    model = commands.add_parser("model", help="list model versions, roll back, or promote one by hand")
    actions = model.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every kept version: its feature service, metrics, and status")
    actions.add_parser("rollback", help="serve the previously served version again; withdraw this one")
    promote = actions.add_parser("promote", help="serve a kept version on purpose (even a withdrawn one)")
    promote.add_argument("version")

    def handler(args: argparse.Namespace) -> int:
        from sms_core.model.store import ModelStoreError

        store: ModelStore = resources()["model_store"].model_store()
        try:
            if args.action == "list":
                return _list(store)
            if args.action == "rollback":
                left, served = store.rollback()
                _record(store, served, f"rolled back from {left}", left)
                print(f"serving {served}; {left} is withdrawn (rolled back)")
            else:
                previous = store.served_version()
                store.restore(args.version)
                _record(store, args.version, "promoted by hand", previous)
                print(f"serving {args.version} (was {previous or 'none'})")
        except ModelStoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    model.set_defaults(handler=handler)


def _list(store: ModelStore) -> int:
    from sms_core.model.metrics import HEADLINE

    served, withdrawn = store.served_version(), store.withdrawn()
    rows = []
    for version, manifest in sorted(store.versions().items(), key=lambda kv: kv[1].get("trained_at", "")):
        status = "SERVED" if version == served else ("withdrawn" if version in withdrawn else "")
        values = manifest.get("metrics", {})
        shown = [f"{values[name]:.4f}" if name in values else "-" for name in HEADLINE]
        rows.append([version, manifest.get("feature_service", "sms_service"), *shown, status])
    header = ["version", "feature service", *HEADLINE, "status"]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _record(store: ModelStore, version: str, how: str, previous: str | None) -> None:
    """A served_model materialization in the Dagster instance, as if the asset had run."""
    import dagster as dg

    from sms_core.model.metrics import HEADLINE

    manifest = store.manifest(version)
    with dg.DagsterInstance.get() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key="served_model",
                description=f"{how} with `sms-assets model`",
                metadata={
                    "version": version,
                    "previous_version": previous or "",
                    "changed": version != previous,
                    "how": how,
                    "feature_service": manifest.get("feature_service", "sms_service"),
                    **{name: manifest["metrics"][name] for name in HEADLINE if name in manifest["metrics"]},
                    "path": dg.MetadataValue.path(str(store.root / version)),
                },
            )
        )
