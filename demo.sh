#!/usr/bin/env bash
# Install evtrack into .venv and run the API description's flow on the embedded engine:
# deploy the datafiles, send the sample events, call each endpoint, look at the quarantine.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q -e .
export EVTRACK_DATA="${EVTRACK_DATA:-.evtrack}"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step .venv/bin/evtrack deploy
step .venv/bin/evtrack send fixtures/events.ndjson
# the API description's example event, once more: a resend is stored once
echo '{"event_id": "e123456", "event_type": "page_view", "user_id": "user_abc", "session_id": "sess_123", "timestamp": "2023-07-15 14:30:00", "platform": "web", "app_version": "1.2.3", "device_type": "desktop", "os": "Windows", "country": "US", "properties": "{\"page\":\"home\",\"referrer\":\"google\"}"}' \
    | step .venv/bin/evtrack send -
step .venv/bin/evtrack query get_events --event-type page_view --platform web \
    --start-date "2023-07-01 00:00:00" --end-date "2023-07-31 23:59:59" --limit 5 --format table
step .venv/bin/evtrack query user_activity --user-id user_abc \
    --start-date "2023-01-01 00:00:00" --end-date "2023-12-31 23:59:59" --format table
step .venv/bin/evtrack query event_stats --start-date "2023-06-01 00:00:00" \
    --end-date "2023-06-30 23:59:59" --platform mobile --format table
step .venv/bin/evtrack send fixtures/bad_events.ndjson || echo "(exit $?: some lines were quarantined, as intended)"
step .venv/bin/evtrack sql "SELECT c__error, event_id FROM events_quarantine LIMIT 5" --format table
step .venv/bin/evtrack query get_events --start-date 2023-07-01 || echo "(exit $?: refused before running anything)"
