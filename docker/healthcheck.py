"""Container health check: exit 0 only when the server says it is ready (model loaded, warmed up).

Standard library only; health endpoints need no API key.
"""

import os
import sys
import urllib.request

PORT = os.environ.get("STTM_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/health/ready", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as err:  # refused, timed out, or HTTP 503 while not ready
    print(f"not ready: {err}", file=sys.stderr)
    sys.exit(1)
