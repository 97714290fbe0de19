"""One router per resource; each handler is a few lines over a function of ``server.queries``."""
