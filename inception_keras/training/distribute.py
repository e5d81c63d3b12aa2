"""Data-parallel training on existing engines: TensorFlow's MirroredStrategy (all local devices) and Keras'
own `keras.distribution.DataParallel` on the JAX backend, one process per host (`jax.distributed`).

    one device -> all local devices:  Distribution.mirrored()            (TF backend; --distribute mirrored)
    all devices of many processes:    Distribution.data_parallel(cluster) (JAX backend; --coordinator ...)

The batch size is the global batch: MirroredStrategy splits it across replicas, and each JAX process
reads its own shard of the data in batches of `batch / processes`. The learning rate applies to
the global batch as it is; nothing is rescaled. Keras' MultiWorkerMirroredStrategy path fails inside
`fit` in Keras 3.15 (keras issue #20585), which is why several hosts go through JAX.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from inception_keras.utils.errors import UserError

BACKENDS = ("tensorflow", "jax")
DEFAULT_PORT = 29500
DEFAULT_COORDINATOR = f"127.0.0.1:{DEFAULT_PORT}"  # process 0, on this host only
MAX_COORDINATOR_TIMEOUT = 86400.0  # seconds (one day): JAX takes whole seconds as a 32-bit integer
CLUSTER_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID")
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
TERMINATED_MESSAGE = "terminated by SIGTERM: run the same command again to resume\n"
_TERMINATING = threading.Lock()


class DistributionError(UserError):
    """The distribution cannot be set up (backend, coordinator, batch size)."""


def parse_host_port(address: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT (an IPv6 host in brackets: [::1]:29500); a ValueError naming it otherwise."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port from 1 to 65535, e.g. {DEFAULT_COORDINATOR}")
    return host, int(port)


def cluster_in_environment() -> bool:
    """Whether any of Keras' KERAS_DISTRIBUTION_* variables is set: they ask for a cluster as the flags do."""
    return any(os.environ.get(name) for name in CLUSTER_VARIABLES)


def select_backend(backend: str | None) -> str:
    """Set the Keras backend before Keras is imported (KERAS_BACKEND); refuse a switch once it is loaded."""
    backend = backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if backend not in BACKENDS:
        raise DistributionError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            raise DistributionError(f"Keras is already loaded with the {keras.backend.backend()} backend; start a "
                                    f"new process with KERAS_BACKEND={backend}")
    os.environ["KERAS_BACKEND"] = backend
    return backend


@dataclass(frozen=True)
class Cluster:
    """Several processes (typically one per host) training one model with JAX.

    `coordinator` is process 0's HOST:PORT, which every process dials; process 0 serves it on
    `bind` (default: that same address, so 127.0.0.1 stays local unless told otherwise).
    """

    coordinator: str
    num_processes: int
    process_id: int
    bind: str | None = None
    timeout: float = 60.0

    def __post_init__(self):
        for option, address in (("--coordinator", self.coordinator), ("--coordinator-bind", self.bind)):
            try:
                if address is not None:
                    parse_host_port(address)
            except ValueError as error:
                raise DistributionError(f"{option} {address!r}: {error}") from None
        if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
            raise DistributionError(f"--process-id {self.process_id} with --num-processes {self.num_processes}: the id "
                                    f"must be 0 to {self.num_processes - 1}")
        if not 0 < self.timeout <= MAX_COORDINATOR_TIMEOUT:
            raise DistributionError(f"--coordinator-timeout must be in (0, {MAX_COORDINATOR_TIMEOUT:g}] seconds, got "
                                    f"{self.timeout}")

    @classmethod
    def from_environment(cls, bind: str | None = None, timeout: float = 60.0) -> "Cluster | None":
        """The cluster Keras' documented variables describe (KERAS_DISTRIBUTION_JOB_ADDRESSES, ..._NUM_PROCESSES,
        ..._PROCESS_ID; the first address is the coordinator), or None when none of them is set."""
        if not cluster_in_environment():
            return None
        addresses = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
        if not addresses:
            raise DistributionError("KERAS_DISTRIBUTION_* variables: KERAS_DISTRIBUTION_JOB_ADDRESSES is not set (the "
                                    "processes' HOST:PORT addresses, the coordinator first)")
        try:
            return cls(addresses.split(",")[0].strip(), int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")),
                       int(os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0")), bind, timeout)
        except ValueError as error:
            raise DistributionError(f"KERAS_DISTRIBUTION_* variables: {error}") from None


class Distribution:
    """How `train` spreads a step: the scope to build in, which process writes, this process's data."""

    def __init__(self, kind: str = "none", strategy=None, num_processes: int = 1, process_id: int = 0):
        self.kind, self.strategy = kind, strategy
        self.num_processes, self.process_id = num_processes, process_id

    @classmethod
    def mirrored(cls) -> "Distribution":
        """tf.distribute.MirroredStrategy over all local devices (TensorFlow backend)."""
        import keras

        if keras.backend.backend() != "tensorflow":
            raise DistributionError("--distribute mirrored needs the TensorFlow backend (--backend tensorflow)")
        import tensorflow as tf

        return cls("mirrored", strategy=tf.distribute.MirroredStrategy())

    @classmethod
    def data_parallel(cls, cluster: Cluster | None = None) -> "Distribution":
        """keras.distribution.DataParallel over every device of every process (JAX backend)."""
        import keras

        if keras.backend.backend() != "jax":
            raise DistributionError("--distribute data_parallel and --coordinator need the JAX backend (--backend jax)")
        import jax

        if cluster is not None and cluster.num_processes > 1:
            _initialize_jax(cluster)
        distribution = keras.distribution.DataParallel(devices=jax.devices())
        distribution.auto_shard_dataset = False  # every process reads its own shard (inception_keras.data.shard)
        keras.distribution.set_distribution(distribution)
        return cls("data_parallel", num_processes=jax.process_count(), process_id=jax.process_index())

    @property
    def multi_process(self) -> bool:
        return self.num_processes > 1

    @property
    def is_chief(self) -> bool:
        """Process 0: it alone writes checkpoints, logs, summaries and exports."""
        return self.process_id == 0

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.num_processes:
            raise DistributionError(f"--batch-size {global_batch} is the global batch and must divide evenly among "
                                    f"{self.num_processes} processes")
        return global_batch // self.num_processes

    def barrier(self, name: str) -> None:
        """Wait until every process gets here (a no-op with one process)."""
        if self.multi_process:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def describe(self) -> str:
        if self.kind == "mirrored":
            return f"MirroredStrategy over {self.strategy.num_replicas_in_sync} local replica(s)"
        if self.kind == "data_parallel":
            import jax

            return (f"keras.distribution.DataParallel over {len(jax.devices())} device(s) in {self.num_processes} "
                    f"process(es); this is process {self.process_id}")
        return "one device"


def _wait_for_coordinator(cluster: Cluster) -> None:
    """Until the coordinator accepts connections; a DistributionError after `cluster.timeout` seconds."""
    host, port = parse_host_port(cluster.coordinator)
    deadline = time.monotonic() + cluster.timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise DistributionError(f"no coordinator answers at {cluster.coordinator} (waited "
                                        f"{cluster.timeout:.0f} s): start process 0 first, or fix --coordinator") \
                    from None
            time.sleep(0.5)


def require_listenable(address: str) -> None:
    """A DistributionError naming `address` unless this host can listen on it now (not a port in use, a host
    of this machine): JAX's own failure is an internal error and a gRPC log line."""
    host, port = parse_host_port(address)
    try:
        family, kind, protocol, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no obstacle
            probe.bind(where)
    except OSError as error:
        raise DistributionError(f"process 0 cannot listen on {address} ({error.strerror or error}) for the "
                                f"coordinator: free that port, or choose another with --coordinator / "
                                f"--coordinator-bind") from None


def _initialize_jax(cluster: Cluster) -> None:
    """jax.distributed.initialize with a clear, bounded failure: JAX itself aborts the process with a C++
    stack trace when peers do not join, so a watchdog exits first with one line (exit 2).

    JAX's preemption service stays off: it installs a SIGTERM handler that only records the signal, so
    SIGTERM would no longer stop the process (see `exit_on_sigterm`)."""
    import jax

    if cluster.process_id == 0:
        require_listenable(cluster.bind or cluster.coordinator)
    else:
        _wait_for_coordinator(cluster)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives; GPUs keep NCCL
    jax.config.update("jax_enable_preemption_service", False)
    message = (f"error: the {cluster.num_processes} processes did not all join the coordinator at "
               f"{cluster.coordinator} within {cluster.timeout:.0f} s (is every --process-id started, with the same "
               f"--coordinator and --num-processes?)\n")
    watchdog = threading.Timer(cluster.timeout + 5, _exit_with, args=(message,))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator_address=cluster.coordinator, num_processes=cluster.num_processes,
                                   process_id=cluster.process_id,
                                   initialization_timeout=int(cluster.timeout) + 60,
                                   coordinator_bind_address=cluster.bind or cluster.coordinator)
    finally:
        watchdog.cancel()


def _exit_with(message: str, code: int = 2) -> None:
    sys.stderr.write(message)
    sys.stderr.flush()
    os._exit(code)


def exit_on_sigterm() -> None:
    """From now on SIGTERM ends the process at once: TERMINATED_MESSAGE, exit code 143, nothing more written.

    Python runs signal handlers in the main thread only, between bytecodes, which never happens while it
    waits in native code (a JAX collective or barrier, XLA compiling); so the signal also wakes a thread
    (through `signal.set_wakeup_fd`) that exits for it. Ending mid-epoch is resumable as a kill is: every
    file is written to a temporary path and renamed into place. Idempotent; call it from the main thread.
    """
    if signal.getsignal(signal.SIGTERM) is _terminate:
        return
    wakeup, woken = socket.socketpair()
    wakeup.setblocking(False)
    signal.signal(signal.SIGTERM, _terminate)
    signal.set_wakeup_fd(wakeup.fileno())
    threading.Thread(target=_terminate_when_woken, args=(woken, wakeup), name="sigterm", daemon=True).start()


def _terminate(signum=None, frame=None) -> None:
    """Exit with TERMINATED_MESSAGE once, whichever of the handler and the woken thread comes first."""
    if _TERMINATING.acquire(blocking=False):
        _exit_with(TERMINATED_MESSAGE, TERMINATED_EXIT_CODE)


def _terminate_when_woken(woken: socket.socket, wakeup: socket.socket) -> None:
    """Exit on a SIGTERM byte among the signal numbers written to the wakeup socket (`wakeup` is held here so
    that it stays open)."""
    for numbers in iter(lambda: woken.recv(64), b""):
        if signal.SIGTERM in numbers:
            _terminate()


@contextlib.contextmanager
def local_only():
    """No Keras distribution while the block runs: variables made or assigned in it live in this process only
    (a distributed assignment would run a collective that the other processes are not in)."""
    import keras

    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


class Snapshot:
    """A single-process copy of a model whose weights the chief saves: saving a model distributed over several
    JAX processes runs collectives, which would hang with only process 0 saving.

    `snapshot(model, ema)` copies the model's weights (each process holds them whole: data parallelism
    replicates them) from local memory into the copy, with the optimizer's moving averages in place of the
    trainable weights when `ema`, and returns the copy (no optimizer: what best.keras and the backup hold).
    Save it inside `local_only()`.
    """

    def __init__(self, model):
        import keras

        with local_only():
            self.copy = keras.models.clone_model(model)

    def __call__(self, model, ema: bool = False):
        import numpy as np

        values = [_local(variable) for variable in model.weights]
        if ema:
            optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
            averages = {optimizer._var_key(variable): average for variable, average in
                        zip(optimizer._trainable_variables, optimizer._model_variables_moving_average)}
            values = [_local(averages.get(optimizer._var_key(variable), variable)) for variable in model.weights]
        with local_only():
            self.copy.set_weights([np.asarray(value) for value in values])
        return self.copy


def _local(variable):
    """A variable's value from this process's memory (no collective): the first local shard of a replicated array."""
    import numpy as np

    value = getattr(variable, "value", variable)
    shards = getattr(value, "addressable_data", None)
    return np.asarray(shards(0)) if shards is not None and not getattr(value, "is_fully_addressable", True) \
        else np.asarray(value)
