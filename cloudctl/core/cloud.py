"""The cloud: the store, the core services over it, and the hypervisor drivers, wired together."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config, Host, default_key_file
from ..drivers.hypervisor.base import DomainEvent, DomainStates, HostResources, HypervisorDriver, HypervisorError
from ..drivers.hypervisor.registry import make_driver
from ..drivers.ip_scripts import scripts_for
from ..drivers.storage.qemu_img import QemuImgStorage
from ..store import records
from ..store.store import Store, ensure_private_dir
from . import gcpolicy
from .addresses import Addresses
from .baremetal.auth import password_hashing
from .baremetal.secrets import BmSecrets
from .catalog import Catalog
from .compute import HOSTS_AT_ONCE, Compute
from .events import Events
from .host_health import HostStates
from .images import Images
from .imports import ImageImports
from .instance_files import InstanceFiles
from .instance_store import InstanceStore
from .interfaces import NetworkInterfaces
from .keypairs import KeyPairs
from .launch_templates import LaunchTemplates
from .metadata import InstanceMetadata
from .monitor import Monitor
from .network import Networks
from .numeric_ids import NumericIds
from .scheduler import Scheduler
from .security_groups import SecurityGroups
from .tags import Tags
from .tasks import Supervisor
from .throttle import Throttle
from .users import Users
from .volumes import Volumes
from .vpc import DefaultVpc
from .work import KeyedWork

if TYPE_CHECKING:
    from ..drivers.loadbalancer.base import LoadBalancerDriver  # (loaded with the ELB: issue 14)

    # (built at their first use or when the state holds their rows: see LAZY_ROWS)
    from .autoscaling import AutoScaling
    from .baremetal.service import Baremetal
    from .cloudformation.engine import Engine as CfnEngine
    from .elb import Elb

    # (loaded when the config has a marketplace: they bring cryptography and asn1crypto)
    from .marketplace.publisher import Publisher
    from .marketplace.subscriber import Subscriber

log = logging.getLogger("cloudctl")

DriverFactory = Callable[[Host], HypervisorDriver]


def elb_driver(config: Config) -> LoadBalancerDriver:
    """The load balancers' data plane: HAProxy, one master-worker process per load balancer."""
    from ..drivers.loadbalancer.haproxy import HaproxyDriver
    assert config.elb.run_dir is not None   # (load_config sets it)
    return HaproxyDriver(config.elb.run_dir, str(config.elb.haproxy))


def host_driver(host: Host) -> HypervisorDriver:
    """The driver the host's config names, or the one for its URI's scheme."""
    return make_driver(host.driver, host.name, host.libvirt_uri)


def _freeze_long_lived() -> None:
    """Keep the cycle collector off the long-lived state.

    A full collection walks every tracked object: with thousands of rows that stalled the loop
    for ~45 ms. Rows never form cycles and are freed by reference counting when deleted, so
    moving what exists now out of the collector's sight costs nothing and cuts those pauses
    to the objects created since (measured: 44 ms -> 14 ms at 5,000 instances).
    """
    gc.freeze()


def controller_id(state_dir: Path) -> str:
    """This controller's id, made at first start: it marks the domains this controller owns."""
    path = state_dir / "controller.id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = uuid.uuid4().hex
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ident + "\n")
            f.flush()
            os.fsync(f.fileno())
        return ident


class _EarlyEvents:
    """The hosts' lifecycle events from before the services exist, handed on in order once they
    do (`deliver_to`), and every later one at once. On the loop thread only."""

    def __init__(self) -> None:
        self._held: list[DomainEvent] | None = []
        self._to: Callable[[DomainEvent], None] | None = None

    def on_event(self, ev: DomainEvent) -> None:
        if self._held is not None:
            self._held.append(ev)
        else:
            assert self._to is not None
            self._to(ev)

    def deliver_to(self, handler: Callable[[DomainEvent], None]) -> None:
        held, self._held, self._to = self._held or [], None, handler
        for ev in held:
            handler(ev)


async def _connect_hosts(cfg: Config, drivers: dict[str, HypervisorDriver],
                         on_event: Callable[[DomainEvent], None]) -> dict[str, HostResources | None]:
    """Open every host's driver, a few at a time, and read its resources: None for a host that
    cannot be reached (logged; nothing is placed there)."""
    gate = asyncio.Semaphore(HOSTS_AT_ONCE)

    async def connect(h: Host) -> HostResources | None:
        async with gate:
            try:
                await drivers[h.name].open(on_event)
                return await drivers[h.name].resources()
            except HypervisorError as e:
                log.error("host %s (%s): cannot connect: %s; no instances will be placed there", h.name,
                          h.uri, e)
                return None

    # Concurrently: one after another, 200 hosts took 14-28 s and a slow one held up the rest.
    try:
        async with asyncio.TaskGroup() as tg:   # an unexpected error cancels the other connections
            found = {h.name: tg.create_task(connect(h)) for h in cfg.hosts}
    except BaseExceptionGroup as eg:
        raise eg.exceptions[0] from None   # the failure itself, as one after another raised it
    return {name: task.result() for name, task in found.items()}


class _EarlyListings:
    """Each connected host's domain states, listed as soon as every host is connected while the
    state still loads, for the reconcile after it (`Compute.reconcile(listed=...)`).

    At 50,000 instances on 200 test hosts the reconcile's listing was ~1.3 s after the load, on
    the hosts' threads and the libvirtds; the load's last seconds run alone on one core, so listed
    then it costs the start little. A listing is used only if its driver says nothing changed
    since (`HypervisorDriver.unchanged_since`): else, or if it is not in yet, the reconcile waits
    for it or lists again as before."""

    def __init__(self, hosts: asyncio.Future[dict[str, HostResources | None]],
                 drivers: dict[str, HypervisorDriver]) -> None:
        self.listed: dict[str, asyncio.Task[DomainStates | None]] = {}
        self._drivers = drivers
        self._gate = asyncio.Semaphore(HOSTS_AT_ONCE)
        hosts.add_done_callback(self._connected)

    def _connected(self, hosts: asyncio.Future[dict[str, HostResources | None]]) -> None:
        if hosts.cancelled() or hosts.exception() is not None:
            return
        for name, res in hosts.result().items():
            if res is not None and name not in self.listed:
                self.listed[name] = asyncio.ensure_future(self._list(self._drivers[name]))

    async def _list(self, driver: HypervisorDriver) -> DomainStates | None:
        async with self._gate:
            try:
                return await driver.domain_states()
            except HypervisorError:
                return None   # (the reconcile lists this host again, and reports it if it fails)

    def cancel(self) -> None:
        for task in self.listed.values():
            task.cancel()


async def _close_after(hosts: asyncio.Future[dict[str, HostResources | None]],
                       drivers: dict[str, HypervisorDriver]) -> None:
    """A start that failed before the services existed: stop connecting, close what connected."""
    hosts.cancel()
    try:
        await hosts
    except BaseException:   # (cancelled, or its own failure: the start's failure is the one raised)
        pass
    for d in drivers.values():
        try:
            await d.close()
        except HypervisorError:
            pass


# Services every user may call but most deployments never do, with the rows they keep (issue 14:
# base RSS, ~3 MiB of code and objects for the first three, ~0.5 MiB for bare metal). Their tables
# are the store's like any other, loaded from the checkpoint and journal; the service itself (its
# code, indexes and background tasks) is built at its first use (`Cloud.autoscaling`,
# `Cloud.baremetal`...), or at start when any of these tables holds a row, so what a crash left
# open is taken up as before (ELB: also when a proxy's folder is left in its run_dir, so that an
# orphan is removed as before).
LAZY_ROWS: dict[str, tuple[type[records.Row], ...]] = {
    "elb": (records.LoadBalancer,),
    "autoscaling": (records.LaunchConfiguration, records.ScalingGroup, records.ScalingMember,
                    records.ScalingActivity, records.ScalingPolicy),
    "cloudformation": (records.CfnStack, records.CfnResource, records.CfnEvent, records.CfnSignal,
                       records.CfnWait, records.CfnChangeSet),
    "baremetal": (records.BmProject, records.BmUser, records.BmNode, records.BmNic, records.BmSwitch,
                  records.BmPort, records.BmNetwork, records.BmAttachment, records.BmOperation,
                  records.BmHeadnode),
}


# Background tasks are stopped in this order at shutdown, each group ended before the next:
# the stack operations first (journaled step by step, they resume at start-up), the host
# pollers (their rounds start fences and state changes), then fence loops, the
# AutoScaling reconciler (it launches and terminates), the marketplace's polls (they start
# downloads), the periodic jobs (checkpoints, expiry, trims),
# a pending re-reconcile and the start-up audit, the load balancers' supervision and proxy
# updates, and last the console captures and switch
# workers (their services' close() ends what they hold: ipmitool processes, SSH sessions).
TASK_ORDER = ("cloudformation", "monitor", "failover", "autoscaling", "marketplace", "periodic", "reconcile",
              "start-up", "elb", "consoles", "switch-ops")


class Cloud:
    """The composition root: every service is built here, in dependency order, and given what it
    uses. Made by `Cloud.open`, which opens the state first (services read their tables as they
    are built) and closes whatever it opened if the start fails."""

    @classmethod
    async def open(cls, config: Config, endpoint: str, driver_factory: DriverFactory = host_driver) -> Cloud:
        ensure_private_dir(config.state_dir)
        store = Store(config.state_dir)
        drivers = {h.name: driver_factory(h) for h in config.hosts}
        # The hosts are connected while the state loads: the load is CPU on a worker thread of
        # this process, a connection is the host's work (at 50,000 instances 200 test hosts took
        # ~15 s of libvirtd's CPU to connect, after a load of ~10 s). Connecting changes no state;
        # the hosts' events wait in `early` until the services that handle them exist.
        early = _EarlyEvents()
        hosts = asyncio.ensure_future(_connect_hosts(config, drivers, early.on_event))
        listings = _EarlyListings(hosts, drivers)
        try:
            await store.open(hold_checkpoint=True)   # (written once the start is done: release_checkpoint)
        except BaseException:
            listings.cancel()
            await _close_after(hosts, drivers)
            raise
        try:
            # First: a missing or wrong key must stop the start here, in one line (SecretsError).
            secrets = await BmSecrets.open(store, config.secrets_key_file or default_key_file(config.state_dir))
            cloud = cls(config, endpoint, store, drivers, secrets)
        except BaseException:
            listings.cancel()
            await store.close()
            await _close_after(hosts, drivers)
            raise
        try:
            found = await hosts
            early.deliver_to(cloud.compute.on_domain_event)
            await cloud._start(found, listings.listed)
            store.release_checkpoint()
        except BaseException:
            listings.cancel()
            try:
                await cloud.stop()
            except Exception:
                log.exception("closing after a failed start failed")
            raise
        return cloud

    def __init__(self, config: Config, endpoint: str, store: Store, drivers: dict[str, HypervisorDriver],
                 secrets: BmSecrets) -> None:
        cfg = config
        self._started = False   # services of LAZY_ROWS built from now on start their background tasks at once
        self.config = config
        self.endpoint = endpoint
        self.store = store
        gcpolicy.install(store)
        self.drivers = drivers
        self.secrets = secrets
        self.started_at = time.time()
        self.tasks = Supervisor(TASK_ORDER)
        self._rereconcile: asyncio.Task[None] | None = None
        self.tags = Tags(store)
        self.events = Events(store)
        self.users = Users(store)
        self.numeric_ids = NumericIds(store, first={"user": 1})   # user 0 is OpenNebula's oneadmin
        self.storage = QemuImgStorage()
        self.images = Images(store, self.tags, cfg.image_store, cfg.user_image_urls, self.storage,
                             cfg.user_image_urls_local)
        self.imports = ImageImports(store, self.tags, self.images, cfg.user_image_urls)
        self.keypairs = KeyPairs(store, self.tags, cfg.limits.key_pairs)
        self.network = Networks(store, cfg)
        self.scheduler = Scheduler(store, cfg)
        self.catalog = Catalog(cfg, endpoint)
        self.health = HostStates(h.name for h in cfg.hosts)
        work = KeyedWork()   # hypervisor work after the answer: instances, their volumes and filters in one order
        self.volumes = Volumes(store, cfg, self.tags, drivers, self.storage, work, self.images.file_of)
        self.security_groups = SecurityGroups(store, self.tags, self.network.vpc_id, drivers, work)
        eips = cfg.elastic_ips
        self.addresses = Addresses(store, cfg, self.tags, self.network,
                                   scripts_for(eips.associate_script, eips.disassociate_script, eips.script_timeout_s))
        instance_dir = cfg.instance_dir or cfg.state_dir / "instances"
        self.instance_store = InstanceStore(instance_dir, self.storage)
        self.compute = Compute(store, cfg, self.tags, self.images, self.keypairs, self.network, self.scheduler,
                               drivers, InstanceFiles(instance_dir, self.storage),
                               self.events, controller_id(cfg.state_dir), work, self.volumes, self.security_groups,
                               self.addresses, self.health.impaired_reason, self.users, self.instance_store)
        self.launch_templates = LaunchTemplates(store, cfg, self.tags, self.compute.attributes)
        self.interfaces = NetworkInterfaces(self.compute.of_owner, cfg.region, self.network, self.addresses,
                                            self.security_groups)
        self.vpc = DefaultVpc(self.network)
        self._elb: Elb | None = None   # (see LAZY_ROWS)
        self.monitor = Monitor(store, cfg, self.compute, self.scheduler, drivers, self.events, self.health,
                               self.tasks)
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        if cfg.marketplace is not None:
            from .marketplace.publisher import Publisher
            from .marketplace.subscriber import Subscriber
            m = cfg.marketplace
            if m.publish is not None:
                self.publisher = Publisher(store, self.images, self.events, m.publish,
                                           cfg.public_url("marketplace"))
            self.subscriber = Subscriber(store, self.images, self.tags, self.events, m)
        self.metadata = InstanceMetadata(store, cfg.region, self.images, self.keypairs, self.network,
                                         addresses=self.addresses, types=cfg.instance_types)
        self._autoscaling: AutoScaling | None = None      # (see LAZY_ROWS)
        self._cloudformation: CfnEngine | None = None
        self._baremetal: Baremetal | None = None           # (see LAZY_ROWS)
        # HIL's login throttle and password threads: /metrics counts them before the first HIL call.
        self.hil_logins = Throttle(cfg.login_throttle)
        self.hil_hashing = password_hashing(cfg.login_throttle)

    @property
    def elb(self) -> Elb:
        """Classic load balancing, built at its first use (see LAZY_ROWS)."""
        if self._elb is None:
            from .elb import Elb
            e = Elb(self.store, self.config, self.network, elb_driver(self.config), self.tasks, self.security_groups)
            self._elb = e
            if self._started:
                e.start()
        return self._elb

    @property
    def autoscaling(self) -> AutoScaling:
        """AutoScaling, built at its first use (see LAZY_ROWS)."""
        if self._autoscaling is None:
            from .autoscaling import AutoScaling
            # It launches from launch templates and keeps its groups' load balancers' members.
            a = AutoScaling(self.store, self.config, self.tags, self.images, self.keypairs, self.security_groups,
                            self.network, self.compute, self.users, self.launch_templates, self.elb)
            self._autoscaling = a
            if self._started:
                a.start(self.tasks, self.events)
        return self._autoscaling

    @property
    def cloudformation(self) -> CfnEngine:
        """CloudFormation, built at its first use (see LAZY_ROWS)."""
        if self._cloudformation is None:
            from .cloudformation.engine import Engine
            # Its resource handlers call the services above, for each stack's owner.
            e = Engine(self.store, self.config.region, self, self.users)
            self._cloudformation = e
            if self._started:
                e.start(self.tasks)
        return self._cloudformation

    @property
    def baremetal(self) -> Baremetal:
        """Bare metal (HIL), built at its first use (see LAZY_ROWS): the HIL API's first request,
        the console's page."""
        if self._baremetal is None:
            from .baremetal.service import Baremetal
            cfg = self.config
            b = Baremetal(self.store, cfg.baremetal, self.events, self.compute, self.users, self.images,
                          self.secrets, cfg.state_dir / "console", self.tasks, cfg.login_throttle,
                          self.hil_logins, self.hil_hashing)
            self._baremetal = b
            if self._started:
                b.start()
                self.tasks.every("periodic", 600.0, b.ops.trim)
        return self._baremetal

    def built(self, service: str) -> bool:
        """Whether a service of LAZY_ROWS has been built (by its first use or its rows at start)."""
        return getattr(self, f"_{service}") is not None

    def _holds_rows(self, service: str) -> bool:
        return any(len(self.store.table(t)) for t in LAZY_ROWS[service])

    def _proxies_left(self) -> bool:
        """Whether the load balancers' run_dir holds a proxy's folder (running or not)."""
        run_dir = self.config.elb.run_dir
        return run_dir is not None and run_dir.is_dir() and any(p.is_dir() for p in run_dir.iterdir())

    async def _start(self, found: dict[str, HostResources | None],
                     listed: Mapping[str, Awaitable[DomainStates | None]] | None = None) -> None:
        """Seed the images, reconcile with the hosts (connected: `found`; `listed`: their states
        listed during the load), then start the background tasks."""
        cfg = self.config
        connected: set[str] = set()
        for h in cfg.hosts:   # the scheduler learns them in config order
            res = found[h.name]
            cpu = h.cpu_overcommit or cfg.overcommit.cpu
            mem = h.memory_overcommit or cfg.overcommit.memory
            if res is None:
                self.scheduler.add_host(h.name, h.zone, 0, 0, cpu, mem, h.disk_gib)
            else:
                self.scheduler.add_host(h.name, h.zone, res.cpus, res.memory_mib, cpu, mem, h.disk_gib)
                connected.add(h.name)
        self.scheduler.start()
        for im in cfg.images:
            seeded = await self.images.seed(im.name, im.file, im.description)
            if seeded:
                log.info("registered image %s as %s", im.name, seeded.id)
        if cfg.marketplace is not None:
            m = cfg.marketplace
            if self.publisher is not None and m.publish is not None:
                self.tasks.every("marketplace", min(60.0, m.publish.resign_before_days * 86400 / 4),
                                 self.publisher.resign_if_due)
            if self.subscriber is not None:
                self.subscriber.resume_pending()
                self.tasks.every("marketplace", m.poll_tick_s, self.subscriber.tick)
        await self.compute.reconcile(listed)
        self.security_groups.start()
        self.volumes.reconcile()
        self.imports.reconcile()
        self.addresses.reconcile()
        self.store.rollback_listeners.append(self._after_rollback)
        _freeze_long_lived()
        self.monitor.start(connected)
        self._started = True
        proxies_left = await asyncio.to_thread(self._proxies_left)
        for service in LAZY_ROWS:
            if self._holds_rows(service) or (service == "elb" and proxies_left):
                getattr(self, service)   # (built, and its background tasks started)
        self.tasks.every("periodic", cfg.checkpoint.interval_s, self._maybe_checkpoint,
                         poll=min(5.0, cfg.checkpoint.interval_s))
        self.tasks.every("periodic", min(60.0, max(1.0, cfg.terminated_visible_s / 4)), self.compute.expire_terminated)
        self.tasks.every("periodic", 600.0, self.events.trim)
        self.tasks.every("periodic", gcpolicy.YOUNG_SWEEP_S, gcpolicy.sweep_young)

    def _after_rollback(self) -> None:
        """Changes the journal could not write were undone in memory, some of them records of
        hypervisor work already done (an instance that became running): reconcile again soon."""
        if self._rereconcile is None or self._rereconcile.done():
            self._rereconcile = self.tasks.spawn("reconcile", self._reconcile_later(), "reconcile after a rollback")

    async def _reconcile_later(self) -> None:
        await asyncio.sleep(1.0)
        try:
            await self.compute.reconcile()
            self.imports.reconcile()
            # An address change whose commit was undone is back to its journaled intent
            # (`nat_unsure`): its scripts are undone and the recorded associations applied again.
            self.addresses.reconcile(only_unsure=True)
        except Exception:
            log.exception("reconcile after a journal rollback failed")

    def pending_work(self) -> int:
        """Background tasks still changing state (hypervisor work, image copies and downloads)."""
        return self.compute.work.pending + self.images.pending

    async def _maybe_checkpoint(self) -> None:
        j = self.store.journal
        if j is None or j.records_in_gen == 0:
            return
        due = time.time() - self.store.last_checkpoint_at >= self.config.checkpoint.interval_s
        if due or j.records_in_gen >= self.config.checkpoint.max_journal_records:
            await self.store.checkpoint()   # (gcpolicy freezes the state after it)

    async def stop(self) -> None:
        """Background tasks first (in TASK_ORDER), then the work they and requests started, the
        services holding processes and sessions, the journal, and the hypervisor connections."""
        await self.tasks.stop()
        if self._elb is not None:
            await self._elb.close()
        if self.subscriber is not None:
            await self.subscriber.close()
        await asyncio.wait_for(self.compute.idle(), timeout=30)
        await self.volumes.close(timeout=30)
        await self.imports.close()
        if self._baremetal is not None:
            await self._baremetal.close()
        else:
            self.hil_hashing.close()
        await self.addresses.idle()
        await self.store.close()
        for d in self.drivers.values():
            try:
                await d.close()
            except HypervisorError:
                pass
