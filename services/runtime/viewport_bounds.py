"""The viewport sizes a display slot accepts: one definition for every service.

The edge validates requests with them (and states them in its OpenAPI
document), the session service before placing a session, the display before
starting an X server.
"""

from __future__ import annotations

MIN_WIDTH, MIN_HEIGHT = 640, 480
MAX_WIDTH, MAX_HEIGHT = 3840, 2160
