"""cloudctl: a private cloud controller."""
from .lazy_aiohttp import defer_client

defer_client()   # aiohttp's HTTP client at its first use, not with aiohttp.web (issue 14: base RSS)
