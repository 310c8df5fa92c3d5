from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# local storage servers (moto, SeaweedFS, fake-gcs-server, Azurite) and their fixtures
pytest_plugins = ["servers.plugin"]
