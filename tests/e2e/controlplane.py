"""A loopback-only Kubernetes control plane for the e2e tests: etcd, kube-apiserver,
kube-controller-manager, the stand-in node agent and its pod runner (which also stands in
for kube-proxy), as local processes.

The binaries come from scripts/controlplane/build.sh (`make controlplane`). Everything
listens on 127.0.0.1, and the service range is inside 127.0.0.0/8 too, so no webhook call
or Service address ever leaves loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.e2e import node
from tests.e2e.kube import Credentials
from tests.e2e.pki import Pki, make_pki
from tests.e2e.processes import Processes, wait_until_ok
from tests.support.helpers import ROOT
from tests.support.processes import free_port

BUILD_SCRIPT = ROOT / "scripts" / "controlplane" / "build.sh"
BIN_ENV = "MESHER_CONTROLPLANE_BIN"
# Each control plane takes a /24 of these for its Services, at random: the Services whose
# pods run here are served on their ClusterIPs (port 443 for the injector's), and two test
# sessions on one machine must not ask for the same address.
SERVICE_RANGES = ipaddress.IPv4Network("127.96.0.0/12")
# The controllers the tests lean on; node lifecycle, cloud and IPAM controllers have no
# real node to look after.
CONTROLLERS = [
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "cronjob-controller",
    "statefulset-controller",
    "daemonset-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
]


class ControlPlaneError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ControlPlane:
    credentials: Credentials
    kubeconfig: Path
    bin_dir: Path
    logs: Path
    version: str
    processes: Processes
    service_cidr: str

    def restart_api_server(self) -> None:
        """Stop kube-apiserver and start it again on the same port, over the same etcd;
        back once it is ready. After SIGTERM it stops listening at once but holds its
        clients' watches open (up to a minute): like a kubelet at the end of a grace
        period, SIGKILL it 2 s on."""
        self.processes.restart("kube-apiserver", patience=2.0)
        wait_until_ok(
            f"{self.credentials.server}/readyz",
            self.processes,
            context=self.credentials.ssl_context(),
        )

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Our own kubectl (the same pin as the API server), on this control plane."""
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def find_binaries() -> Path:
    """Where the built binaries are: $MESHER_CONTROLPLANE_BIN, else build.sh's cache."""
    if BIN_ENV in os.environ:
        bin_dir = Path(os.environ[BIN_ENV])
    else:
        where = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--where"], capture_output=True, text=True, check=True
        )
        bin_dir = Path(where.stdout.strip())
    missing = [
        b
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
        if not (bin_dir / b).is_file()
    ]
    if missing:
        raise ControlPlaneError(
            f"no {', '.join(missing)} in {bin_dir}: run `make controlplane` first "
            "(or `pytest -m 'not e2e'` for the tests that need no control plane)"
        )
    return bin_dir


def _untainted(body: bytes) -> bool:
    return not json.loads(body)["spec"].get("taints")


def write_kubeconfig(
    path: Path,
    credentials: Credentials,
    *,
    user: str = "e2e-admin",
    auth: dict[str, str] | None = None,
    namespace: str | None = None,
) -> None:
    """A kubeconfig for the API server of `credentials`, as `user`: with `auth` (say, a
    token), else with the credentials' client certificate."""
    if auth is None:
        auth = {"client-certificate": str(credentials.cert), "client-key": str(credentials.key)}
    context = {"cluster": "e2e", "user": user}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": credentials.server,
                    "certificate-authority": str(credentials.ca),
                },
            }
        ],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "e2e", "context": context}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config))


def etcd_flags(*, client: str, peer: str, data: Path) -> list[str]:
    return [
        "--name=e2e",
        f"--data-dir={data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=e2e={peer}",
        # a throw-away store: durability costs seconds of fsync on every write
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_flags(
    *, etcd: str, port: int, pki: Pki, workdir: Path, service_cidr: str
) -> list[str]:
    return [
        f"--etcd-servers={etcd}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        f"--service-cluster-ip-range={service_cidr}",
        # Kubernetes refuses 127.0.0.1 as the `kubernetes` Service's endpoint, and would
        # say so every 10 s. (No EndpointSlice may hold a loopback address either: the pod
        # runner serves Services' ClusterIPs from the pods themselves.)
        "--endpoint-reconciler-type=none",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        f"--cert-dir={workdir / 'apiserver-certs'}",
        "--profiling=false",
    ]


def controller_manager_flags(
    *, kubeconfig: Path, pki: Pki, controllers: Sequence[str] = CONTROLLERS
) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        "--leader-elect=false",
        f"--controllers={','.join(controllers)}",
        # each controller acts as its own service account, under the RBAC roles
        # kube-apiserver bootstraps for it, as in a real cluster
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca.cert}",
        # no serving: nothing here scrapes or probes it
        "--secure-port=0",
    ]


@contextlib.contextmanager
def running_control_plane(
    workdir: Path,
    bin_dir: Path,
    *,
    controllers: Sequence[str] = CONTROLLERS,
    stand_in_node: bool = True,
) -> Iterator[ControlPlane]:
    """Start everything in `workdir` (PKI, etcd data, logs, kubeconfig); stop it all after.
    `controllers` and `stand_in_node` False make a quieter one (bench/scale.py: 50,000
    pods that nothing should act on): only those controllers, and no node agent, pod
    runner or node."""
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    service_range = random.choice(list(SERVICE_RANGES.subnets(new_prefix=24)))
    # the `kubernetes` Service takes the range's first address
    pki = make_pki(workdir / "pki", service_ip=str(service_range.network_address + 1))
    processes = Processes(logs)
    try:
        etcd, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        processes.start(
            "etcd",
            [str(bin_dir / "etcd"), *etcd_flags(client=etcd, peer=peer, data=workdir / "etcd")],
        )
        wait_until_ok(f"{etcd}/health", processes)
        port = free_port()
        processes.start(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                *apiserver_flags(
                    etcd=etcd, port=port, pki=pki, workdir=workdir, service_cidr=str(service_range)
                ),
            ],
        )
        credentials = Credentials(
            server=f"https://127.0.0.1:{port}",
            ca=pki.ca.cert,
            cert=pki.admin.cert,
            key=pki.admin.key,
        )
        admin = credentials.ssl_context()
        wait_until_ok(f"{credentials.server}/readyz", processes, context=admin)
        kubeconfig = workdir / "kubeconfig"
        write_kubeconfig(kubeconfig, credentials)
        manager_kubeconfig = workdir / "controller-manager.kubeconfig"
        write_kubeconfig(
            manager_kubeconfig,
            Credentials(
                server=credentials.server,
                ca=pki.ca.cert,
                cert=pki.controller_manager.cert,
                key=pki.controller_manager.key,
            ),
        )
        processes.start(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                *controller_manager_flags(
                    kubeconfig=manager_kubeconfig, pki=pki, controllers=controllers
                ),
            ],
        )
        if stand_in_node:
            _start_stand_in_node(processes, credentials, pki, workdir)
        version = json.loads(
            wait_until_ok(f"{credentials.server}/version", processes, context=admin)
        )
        yield ControlPlane(
            credentials=credentials,
            kubeconfig=kubeconfig,
            bin_dir=bin_dir,
            logs=logs,
            version=version["gitVersion"],
            processes=processes,
            service_cidr=str(service_range),
        )
    finally:
        processes.stop()


def _start_stand_in_node(
    processes: Processes, credentials: Credentials, pki: Pki, workdir: Path
) -> None:
    """The node agent and the pod runner; back once the node is registered and untainted."""
    processes.start(
        "node-agent",
        [
            sys.executable,
            "-m",
            "tests.e2e.node_agent",
            f"--server={credentials.server}",
            f"--ca={pki.ca.cert}",
            f"--cert={pki.admin.cert}",
            f"--key={pki.admin.key}",
        ],
        cwd=ROOT,
    )
    processes.start(
        "pod-runner",
        [
            sys.executable,
            "-m",
            "tests.e2e.pod_runner",
            f"--server={credentials.server}",
            f"--ca={pki.ca.cert}",
            f"--cert={pki.admin.cert}",
            f"--key={pki.admin.key}",
            f"--workdir={workdir / 'pods'}",
        ],
        cwd=ROOT,
    )
    wait_until_ok(
        f"{credentials.server}/api/v1/nodes/{node.NODE_NAME}",
        processes,
        context=credentials.ssl_context(),
        accept=_untainted,
    )
