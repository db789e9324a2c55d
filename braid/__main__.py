"""``python -m braid``: the ``braid`` command."""

import sys

from braid.service.cli.main import main

sys.exit(main())
