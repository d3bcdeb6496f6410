// The sync service runs this script after every mapping; no assignments to cache here.
return null
