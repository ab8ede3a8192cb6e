"""The server's handlers, one module per resource of Tinybird's API; ``server/app.py`` routes to them.

A handler checks the token's scope, reads its parameters, calls the engine (through
``server.calls``, off the event loop) and answers with a shape of ``server.shapes``.
"""
