"""Training on a Dask cluster (``--scheduler tcp://host:8786``) with LightGBM's own Dask
interface: each worker holds a slice of the rows and LightGBM's workers train one model
together, so a fleet's rows need not fit one machine's memory."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from der_core.errors import DERError, UsageError


class SchedulerUnavailable(DERError):
    """The Dask scheduler named by ``--scheduler`` did not answer."""


def connect(address: str, timeout_s: float = 10.0):
    from dask.distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s")
    except ValueError as error:  # an address Dask cannot parse: no port, an unknown scheme
        raise UsageError(f"--scheduler {address!r}: {error}; expected a Dask scheduler's address such as "
                         "tcp://host:8786") from None
    except (OSError, TimeoutError) as error:
        raise SchedulerUnavailable(f"Dask scheduler {address} did not answer within {timeout_s:g} s ({error}); "
                                   "start one with `dask scheduler` or drop --scheduler to train locally") from None


def fit_dask(client, params: dict[str, Any], X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None):
    """A fitted local ``LGBMRegressor`` trained across the cluster's workers (each row
    weighted by ``weight`` when given)."""
    import dask.array as da
    from lightgbm import DaskLGBMRegressor

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    rows = max(1, math.ceil(len(X) / workers))
    dX = da.from_array(X, chunks=(rows, X.shape[1]))
    dy = da.from_array(y, chunks=rows)
    dw = None if weight is None else da.from_array(np.asarray(weight, dtype="float64"), chunks=rows)
    params = {k: v for k, v in params.items() if k != "n_jobs"}
    with warnings.catch_warnings():
        # Each worker uses the threads the cluster gave it; LightGBM says so about n_jobs even
        # when it is left at its default.
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
        return DaskLGBMRegressor(client=client, **params).fit(dX, dy, sample_weight=dw).to_local()
