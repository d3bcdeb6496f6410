"""kopf handlers (thin), target and Secret resolution, status and conditions, locks, settings."""
