"""HTTP entrypoints: the app factory, the routers and the process main."""
