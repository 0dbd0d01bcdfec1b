"""``python -m producer.cli``: the same as the ``embedq`` command."""

import sys

from producer.cli import main

sys.exit(main())
