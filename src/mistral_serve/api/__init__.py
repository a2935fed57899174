"""HTTP surface: the FastAPI app, its lifespan, pure-ASGI middleware, routes and error handlers.
The only package that imports FastAPI or Starlette."""
