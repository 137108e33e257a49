// Swagger UI over this service's own OpenAPI document (development only: service/http/devpages.py).
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
    // No calls to the public validator: this machine, and most intranets, cannot reach it.
    validatorUrl: null,
  });
});
