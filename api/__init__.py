"""The HTTP API: routes and dependencies only; the work happens in workflows."""
