// The policy service of idmsync's test OpenIDM. The scheduler and the health check require the
// service to exist; the reset needs no policies, so every object and property passes.
(function () {
    if (request.method === "read") {
        return { "_id" : "", "resources" : [ ] };
    }
    if (request.method === "action"
            && (request.action === "validateObject" || request.action === "validateProperty")) {
        return { "result" : true, "failedPolicyRequirements" : [ ] };
    }
    throw "policy: unsupported request " + request.method + " " + request.action;
}());
