"""python -m bert.convert SRC DST --to=hf|orbax: see bert/convert/cli.py."""

import sys

from bert.convert import cli

sys.exit(cli.main())
