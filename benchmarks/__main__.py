"""`python -m benchmarks [online|scale|serving] [--quick]`: the benchmark suite, or one part of it.

With no part, the whole suite: the online comparison, then the asset graph at scale; one table on
stdout and one JSON report under benchmarks/results/.
"""

import sys

from benchmarks import serving, suite


def main(argv: list[str]) -> int:
    if argv and argv[0] == "serving":
        return serving.main(argv[1:])
    return suite.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
