"""`python -m benchmarks [online|scale|model] [--quick]`: the benchmark suite, or one part of it;
`python -m benchmarks report PATH...`: the Markdown pages of JSON reports already written.

With no part, the whole suite: the model comparison, the online comparison, then the asset graph at
scale; one table on stdout, and one JSON report and its Markdown page under benchmarks/results/.
"""

import sys

if __name__ == "__main__":
    argv = sys.argv[1:]
    # Only the suite needs Feast, Dagster and the rest; rewriting pages needs none of it.
    if argv[:1] == ["report"]:
        from benchmarks import reports

        sys.exit(reports.main(argv[1:]))
    from benchmarks import suite
    from sms_assets.defs.ingestion.dataset import DatasetError
    from sms_core import settings, urls

    try:
        sys.exit(suite.main(argv))
    except (DatasetError, settings.BadSetting, urls.BadUrl, urls.ServiceUnavailable) as exc:
        # What the user must fix, in one line, as `sms-assets` says it.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
