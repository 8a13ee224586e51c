"""The transport over gRPC (tritonclient's blocking client); errors mapped by status code."""

from __future__ import annotations

import numpy as np

from tsrepo.client import failures
from tsrepo.client.transport import Protocol, Transport, config_text
from tsrepo.dtypes import BY_WIRE


class GrpcTransport(Transport):
    protocol = Protocol.GRPC

    def __init__(self, address, timeout: float):
        super().__init__(address, timeout)
        import tritonclient.grpc as grpcclient

        self._grpcclient = grpcclient
        self._client = grpcclient.InferenceServerClient(str(address))

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._client, method)(*args, client_timeout=self.timeout, **kwargs)
        except InferenceServerException as e:
            f = failures.from_grpc_code(str(e.status() or ""))
            message = e.message() or str(e)
            if f is failures.TIMEOUT:
                raise f.error(f"{self.url} (gRPC {method}): no answer within {self.timeout:g} s") from None
            if f.unreachable:
                raise f.error(f"server not reachable at {self.url} (gRPC): {message}") from None
            raise f.error(f"{self.url} (gRPC {method}): {message}") from None

    def live(self) -> bool:
        return bool(self.call("is_server_live"))

    def server_ready(self) -> bool:
        return bool(self.call("is_server_ready"))

    def model_ready(self, model: str, version: int | None = None) -> bool:
        return bool(self.call("is_model_ready", model, "" if version is None else str(version)))

    def metadata(self, model: str) -> dict:
        return self.call("get_model_metadata", model, as_json=True)

    def config(self, model: str) -> dict:
        return self.call("get_model_config", model, as_json=True).get("config", {})

    def infer(self, model, version, inputs, outputs):
        grpcclient = self._grpcclient
        wires = {d.numpy: d.wire for d in BY_WIRE.values()}
        ins = []
        for name, arr in inputs.items():
            wire = wires.get(str(arr.dtype))
            if wire is None:
                raise ValueError(f"input {name}: dtype {arr.dtype} has no KServe datatype")
            i = grpcclient.InferInput(name, list(arr.shape), wire)
            i.set_data_from_numpy(np.ascontiguousarray(arr))
            ins.append(i)
        outs = [grpcclient.InferRequestedOutput(o) for o in outputs]
        version_text = "" if version is None else str(version)
        result = self.call("infer", model, ins, model_version=version_text, outputs=outs)
        return {o: result.as_numpy(o) for o in outputs}

    def statistics(self, model: str) -> dict:
        return self.call("get_inference_statistics", model, as_json=True)

    def repository_index(self) -> list[dict]:
        return self.call("get_model_repository_index", as_json=True).get("models", [])

    def load(self, model: str, config: dict | str | None = None) -> None:
        self.call("load_model", model, config=config_text(config) if config is not None else None)

    def unload(self, model: str) -> None:
        self.call("unload_model", model)
