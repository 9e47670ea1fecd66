"""The HTTP edge: the app factory, middleware, dependencies, who is calling, errors as HTTP, routers."""
