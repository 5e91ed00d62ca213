"""FastAPI router: the front door of an Onion."""
