"""Compact JSON, as mod_audio_stream writes it (cJSON_PrintUnformatted): no blanks, UTF-8 kept.
One encoder for every body and message the daemon writes."""

from __future__ import annotations

import json

compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
