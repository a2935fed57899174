"""The request pipeline: validate → route → proxy. Framework-free: it returns a status, headers
and a body (bytes or an async byte stream); the api layer only wires it to HTTP."""
