"""AutoScaling: launch configurations, groups and their desired state, scaling policies, and the
reconciler converging each group's instances to it (launching through `Compute.run` as the
cloud's own `autoscaling` service, for the group's owner)."""
from __future__ import annotations

from ...config import Config
from ...store.store import Store
from ..compute import Compute
from ..events import Events
from ..images import Images
from ..keypairs import KeyPairs
from ..network import Networks
from ..security_groups import SecurityGroups
from ..tags import Tags
from ..tasks import Supervisor
from ..users import Users
from .activities import Activities
from .groups import Groups
from .launch_configs import LaunchConfigs
from .members import Members
from .model import BalancerMembership, TemplateSource
from .policies import Policies
from .reconciler import Reconciler


class AutoScaling:
    """The service as the composition root builds it; the API calls its parts."""

    def __init__(self, store: Store, config: Config, tags: Tags, images: Images, keypairs: KeyPairs,
                 security_groups: SecurityGroups, network: Networks, compute: Compute, users: Users,
                 templates: TemplateSource, balancers: BalancerMembership) -> None:
        self.config = config
        self.members = Members(store, tags)
        self.activities = Activities(store)
        groups: Groups | None = None
        self.launch_configs = LaunchConfigs(
            store, config.region, images, keypairs, security_groups, compute.type_of,
            lambda owner, name: groups.using_launch_configuration(owner, name) if groups else None,
            config.autoscaling.max_launch_configurations)
        groups = self.groups = Groups(store, config, network, tags, compute, self.launch_configs, self.members,
                                      self.activities, templates, balancers)
        self.policies = Policies(store, config.region, groups)
        self.reconciler = Reconciler(store, config, groups, self.members, self.activities, self.launch_configs,
                                     compute, users, templates, balancers)

    def connect(self, templates: TemplateSource, balancers: BalancerMembership) -> None:
        """Use these launch-template and load-balancer services instead (the core tests' stand-ins)."""
        self.groups.templates = self.reconciler.templates = templates
        self.groups.balancers = self.reconciler.balancers = balancers

    def start(self, tasks: Supervisor, events: Events) -> None:
        tasks.spawn("autoscaling", self.reconciler.run(), "autoscaling reconciler")
        tasks.spawn("autoscaling", self.reconciler.watch(events), "autoscaling events")
