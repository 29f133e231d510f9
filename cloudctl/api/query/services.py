"""The query-protocol services the Query endpoint serves besides EC2: one package each, one line here."""
from __future__ import annotations

from pathlib import Path

from ..autoscaling import SPEC as AUTOSCALING
from ..cloudformation import SPEC as CLOUDFORMATION
from ..elb import SPEC as ELB
from ..iam import SPEC as IAM
from ..sts import SPEC as STS
from .service import QueryService, QueryServiceSpec, load

SPECS: tuple[QueryServiceSpec, ...] = (STS, IAM, AUTOSCALING, ELB, CLOUDFORMATION)


def load_all(cache_dir: Path) -> dict[str, QueryService]:
    """Each service over its trimmed botocore model, by signing name (blocks: call at start-up)."""
    return {spec.name: load(spec, cache_dir) for spec in SPECS}
