"""``python -m zs_perception.annotation``: the annotation command (see annotation.run)."""

import sys

from zs_perception.annotation.run import main

sys.exit(main())
