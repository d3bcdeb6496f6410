// The sync service runs this script for every mapping; with no role assignments configured there
// is nothing to add to the target.
({ "result" : true });
