// info/ping: OpenIDM's health information (state ACTIVE_READY once every service is up).
(function () {
    if (request.method !== "read") {
        throw "info/ping supports read only, not " + request.method;
    }
    return healthinfo;
}());
