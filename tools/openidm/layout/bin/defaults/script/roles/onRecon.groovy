// The sync service loads this script by name at start-up; role assignments are not used by
// idmsync's test install, so there is nothing to prepare before a reconciliation.
return null
