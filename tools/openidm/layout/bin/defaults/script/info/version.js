// info/version: the product version and revision OpenIDM reports about itself.
(function () {
    if (request.method !== "read") {
        throw "info/version supports read only, not " + request.method;
    }
    return version;
}());
