"""The HTTP edge: routes, handlers, parameters, errors and the envelope, OpenAPI."""
