"""``python -m clinical_transfer VERB ...`` is the ``clinical-transfer`` command."""

import sys

from clinical_transfer.cli import main

sys.exit(main())
