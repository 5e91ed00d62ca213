"""The router's routes by concern: OpenAI's API, TGI's API, and operations (probes, metrics,
status). Each module has an APIRouter that the app factory includes."""
