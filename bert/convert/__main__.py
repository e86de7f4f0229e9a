"""python -m bert.convert SRC DST --to=hf|orbax|sentence-transformers: the conversion command.

An entry point, like main.py, that nothing imports: it runs the CLI of bert/export/cli.py, which
sits above the loader, so that the command keeps its name while bert/convert/ itself imports
nothing above it."""

import sys

from bert.export import cli

sys.exit(cli.main())
