"""Headnodes: a project's VMs on its bare-metal networks (HIL's headnode calls).

A headnode is an ordinary instance, so everything the cloud does for instances (scheduling,
monitoring, consoles, the EC2 API) holds for it. It belongs to the EC2 user `hil-<project>`,
made on first use: an admin who hands that user's keys to the project lets it drive its
headnodes with the AWS CLI as well. Its NICs ("hnics") join the project's networks as access
ports of the VLAN on the configured headnode bridge, trunked to the switches, so a headnode and
the project's nodes share a layer-2 segment.

As in HIL, a headnode's networks are fixed by its first start (HIL called it "frozen"): the
running VM's NICs never disagree with the record.
"""
from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from ...store.records import BmHeadnode, User
from ..compute import Compute
from ..context import Caller as Ec2Caller
from ..errors import CloudError, ErrorKind
from ..ids import new_mac
from ..images import Images
from ..launch import LaunchSpec, VlanNic
from ..users import Users
from .auth import Caller
from .errors import (
    AuthorizationError,
    BadArgumentError,
    BlockedError,
    BusyError,
    DuplicateError,
    IllegalStateError,
    NotFoundError,
    ProjectMismatchError,
)
from .names import label
from .site import Site

OWNER_PREFIX = "hil-"


class Headnodes:
    def __init__(self, site: Site, compute: Compute, users: Users, images: Images, bridge: str | None) -> None:
        self.site = site
        self.compute = compute
        self.users = users
        self.images = images
        self.bridge = bridge

    # -- lookups ------------------------------------------------------------------------------
    def get(self, caller: Caller, name: str) -> BmHeadnode:
        hn = self.site.headnodes.get(name)
        if hn is None:
            raise NotFoundError(f"headnode {name!r} does not exist")
        caller.require_project(hn.project)
        return hn

    def _hnic(self, hn: BmHeadnode, hnic: str) -> Mapping[str, Any]:
        h = hn.hnics.get(hnic)
        if h is None:
            raise NotFoundError(f"headnode {hn.name!r} has no hnic {hnic!r}")
        return h

    @staticmethod
    def _unfrozen(hn: BmHeadnode, what: str) -> None:
        if hn.instance_id is not None:
            raise IllegalStateError(f"headnode {hn.name!r} has been started: its NICs can no longer {what}")

    def _owner(self, project: str) -> str:
        return OWNER_PREFIX + project

    async def _owner_user(self, project: str) -> User:
        """The project's EC2 user, who owns its headnodes (made on first use)."""
        name = self._owner(project)
        user = self.users.table.get(name)
        if user is None:
            try:
                user = await self.users.create(name)
            except CloudError:   # made by a concurrent call meanwhile
                user = self.users.table.get(name)
                if user is None:
                    raise
        assert isinstance(user, User)
        return user

    async def _ec2_caller(self, project: str) -> Ec2Caller:
        return Ec2Caller(await self._owner_user(project))

    # -- calls --------------------------------------------------------------------------------
    async def create(self, caller: Caller, name: str, project: Any, base_img: Any,
                     instance_type: Any = None, user_data: Any = None) -> BmHeadnode:
        label("headnode", name)
        if not isinstance(project, str):
            raise BadArgumentError('expected {"project": ..., "base_img": ...}')
        self.site.project(project)
        caller.require_project(project)
        if name in self.site.headnodes.rows:
            raise DuplicateError(f"headnode {name!r} already exists")
        image = self._image(base_img)
        if instance_type is not None and (not isinstance(instance_type, str)
                                          or instance_type not in self.compute.config.instance_types):
            raise BadArgumentError(f"instance_type {instance_type!r} is not one of this cloud's: "
                                   f"{', '.join(self.compute.config.instance_types)}")
        if user_data is not None:
            if not isinstance(user_data, str):
                raise BadArgumentError("user_data must be a string")
            user_data = base64.b64encode(user_data.encode()).decode()
        if len(self._owner(project)) > 64:
            raise BadArgumentError(f"project name {project!r} is too long to own headnodes (60 characters at most)")
        hn = BmHeadnode(name=name, project=project, image_id=image, created=time.time(),
                        instance_type=instance_type, user_data=user_data)
        await self.site.commit(hn)
        return hn

    def _image(self, base_img: Any) -> str:
        """An image every project may boot: a public machine image, by id or name."""
        if not isinstance(base_img, str) or not base_img:
            raise BadArgumentError('expected {"base_img": <image id or name>}')
        for im in self.images.table.values():
            if im.public and im.image_type == "machine" and im.state == "available" and base_img in (im.id, im.name):
                return im.id
        raise NotFoundError(f"no public machine image {base_img!r}; see GET /v0/headnode_images/")

    def image_names(self, caller: Caller) -> list[str]:
        return sorted(im.name for im in self.images.table.values()
                      if im.public and im.image_type == "machine" and im.state == "available")

    async def delete(self, caller: Caller, name: str) -> None:
        hn = self.get(caller, name)
        if hn.instance_id is not None:
            ec2 = await self._ec2_caller(hn.project)
            try:
                await self.compute.terminate(ec2, [hn.instance_id])
            except CloudError as e:
                if e.kind is not ErrorKind.NOT_FOUND:
                    raise _bm(e) from None
        await self.site.commit(delete=(hn,))

    async def create_hnic(self, caller: Caller, name: str, hnic: str) -> None:
        hn = self.get(caller, name)
        label("hnic", hnic)
        self._unfrozen(hn, "change")
        if hnic in hn.hnics:
            raise DuplicateError(f"headnode {name!r} already has hnic {hnic!r}")
        await self.site.commit(dataclasses.replace(hn, hnics={**hn.hnics, hnic: {"mac": new_mac(), "network": None}}))

    async def delete_hnic(self, caller: Caller, name: str, hnic: str) -> None:
        hn = self.get(caller, name)
        self._hnic(hn, hnic)
        self._unfrozen(hn, "change")
        await self.site.commit(dataclasses.replace(hn, hnics={k: v for k, v in hn.hnics.items() if k != hnic}))

    async def connect_network(self, caller: Caller, name: str, hnic: str, network: Any) -> None:
        hn = self.get(caller, name)
        h = self._hnic(hn, hnic)
        if not isinstance(network, str):
            raise BadArgumentError('expected {"network": ...}')
        net = self.site.network(network)
        self._unfrozen(hn, "change networks")
        if net.access and hn.project not in net.access:
            raise ProjectMismatchError(f"project {hn.project!r} has no access to network {network!r}")
        if h["network"] is not None:
            raise BlockedError(f"hnic {hnic!r} is already on network {h['network']!r}; detach it first")
        await self.site.commit(dataclasses.replace(hn, hnics={**hn.hnics, hnic: {**h, "network": network}}))

    async def detach_network(self, caller: Caller, name: str, hnic: str, network: Any) -> None:
        hn = self.get(caller, name)
        h = self._hnic(hn, hnic)
        if not isinstance(network, str):
            raise BadArgumentError('expected {"network": ...}')
        self._unfrozen(hn, "change networks")
        if h["network"] != network:
            raise BadArgumentError(f"network {network!r} is not attached to hnic {hnic!r}")
        await self.site.commit(dataclasses.replace(hn, hnics={**hn.hnics, hnic: {**h, "network": None}}))

    async def start(self, caller: Caller, name: str) -> None:
        hn = self.get(caller, name)
        owner = await self._owner_user(hn.project)
        try:
            if hn.instance_id is None:
                await self._launch(owner, hn)
            else:
                await self.compute.start(Ec2Caller(owner), [hn.instance_id])
        except CloudError as e:
            raise _bm(e) from None

    async def _launch(self, owner: User, hn: BmHeadnode) -> None:
        """The headnode's instance, launched by the bare-metal service for the project's user."""
        if self.bridge is None:
            raise IllegalStateError("this cloud has no headnode bridge (baremetal.headnode_bridge in the config)")
        nics = tuple(VlanNic(hnic, h["mac"], self.site.network(h["network"]).vlan)
                     for hnic, h in hn.hnics.items() if h["network"] is not None)
        spec = LaunchSpec(image_id=hn.image_id, instance_type=hn.instance_type or None,
                          user_data=hn.user_data or None, vlan_nics=nics, owner=owner.account_id,
                          # one launch per headnode, also when a crash hides the first one's answer
                          client_token=f"headnode-{hn.name}-{int(hn.created * 1000)}"[:64])
        _, launched = await self.compute.run(Ec2Caller.service("hil-headnodes"), spec)
        await self.site.commit(dataclasses.replace(hn, instance_id=launched[0].id))

    async def stop(self, caller: Caller, name: str) -> None:
        hn = self.get(caller, name)
        if hn.instance_id is None:
            raise IllegalStateError(f"headnode {name!r} has never been started")
        try:
            await self.compute.stop(await self._ec2_caller(hn.project), [hn.instance_id], force=True)
        except CloudError as e:
            raise _bm(e) from None

    def show(self, caller: Caller, name: str) -> dict[str, Any]:
        hn = self.get(caller, name)
        inst = self.compute.table.get(hn.instance_id) if hn.instance_id else None
        image = self.images.table.get(hn.image_id)
        return {"name": hn.name, "project": hn.project, "base_img": image.name if image else hn.image_id,
                "nics": sorted(hn.hnics), "vncport": None,
                "hnics": {k: {"macaddr": v["mac"], "network": v["network"]} for k, v in sorted(hn.hnics.items())},
                "instance_id": hn.instance_id, "state": inst.state if inst else "defined",
                "private_ip": inst.private_ip if inst else None, "owner": self._owner(hn.project)}

    def project_headnodes(self, caller: Caller, project: str) -> list[str]:
        caller.require_project(project)
        self.site.project(project)
        return sorted(h.name for h in self.site.headnodes.values() if h.project == project)


def _bm(e: CloudError) -> Exception:
    """The instance layer's refusal in the bare-metal API's terms, by its kind."""
    match e.kind:
        case ErrorKind.NOT_FOUND:
            return NotFoundError(e.message)
        case ErrorKind.WRONG_STATE | ErrorKind.CAPACITY | ErrorKind.LIMIT:
            return IllegalStateError(e.message)
        case ErrorKind.CONFLICT:
            return BlockedError(e.message)
        case ErrorKind.AUTH:
            return AuthorizationError(e.message)
        case ErrorKind.UNAVAILABLE:
            return BusyError(e.message, 1.0)
    return BadArgumentError(e.message)

