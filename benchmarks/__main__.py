"""`python -m benchmarks [online|scale] [--quick]`: the benchmark suite, or one part of it.

With no part, the whole suite: the online comparison, then the asset graph at scale; one table on
stdout and one JSON report under benchmarks/results/.
"""

import sys

from benchmarks import suite

if __name__ == "__main__":
    sys.exit(suite.main(sys.argv[1:]))
