"""The serving process: the webhook and admin apps over aiohttp, the connection guard,
TLS and its reloads, the template file source, the lifecycle."""
