"""HIL's REST API (bare metal), served as its own sub-application of the admin endpoint."""
from .app import HilApi
from .wire import refusal as hil_refusal

__all__ = ["HilApi", "hil_refusal"]
