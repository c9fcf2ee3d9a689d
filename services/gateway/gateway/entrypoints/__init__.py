"""HTTP entrypoints: the app factory, routers, dependencies, settings, edge middleware, main."""
