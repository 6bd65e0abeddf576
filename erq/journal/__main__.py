"""``python -m erq.journal``: the ``erq-journal`` command."""

import sys

from erq.journal.tool import main

sys.exit(main())
