"""A Python client for the braid.v1 gRPC API.

>>> with BraidClient("127.0.0.1:50051") as client:
...     response = client.search("vitamin D and infection", k=5, pipeline="hybrid", explain=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from braid.proto.braid.v1 import braid_pb2 as pb
from braid.proto.braid.v1 import braid_pb2_grpc


class BraidClient:
    """Blocking client. ``api_key`` is sent with every call; ``tls_ca`` (PEM) switches to TLS."""

    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        tls_ca: Path | str | None = None,
        timeout: float | None = 30.0,
        server_name: str | None = None,
    ) -> None:
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target)
        self.stub = braid_pb2_grpc.BraidStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        return method(request, timeout=timeout or self.timeout, metadata=self.metadata)

    def search(
        self,
        query: str,
        k: int = 10,
        pipeline: str = "",
        weights: Mapping[str, float] | None = None,
        rerank_depth: int | None = None,
        explain: bool = False,
        timeout: float | None = None,
    ) -> pb.SearchResponse:
        request = pb.SearchRequest(query=query, k=k, pipeline=pipeline, weights=dict(weights or {}), explain=explain)
        if rerank_depth is not None:
            request.rerank_depth = rerank_depth
        return self._call(self.stub.Search, request, timeout)

    def batch_search(
        self, requests: Sequence[pb.SearchRequest], timeout: float | None = None
    ) -> pb.BatchSearchResponse:
        return self._call(self.stub.BatchSearch, pb.BatchSearchRequest(requests=requests), timeout)

    def rerank(
        self, query: str, documents: Iterable[tuple[str, str]], pipeline: str = "", timeout: float | None = None
    ) -> pb.RerankResponse:
        docs = [pb.Document(id=doc_id, text=text) for doc_id, text in documents]
        return self._call(self.stub.Rerank, pb.RerankRequest(query=query, documents=docs, pipeline=pipeline), timeout)

    def list_pipelines(self, timeout: float | None = None) -> pb.ListPipelinesResponse:
        return self._call(self.stub.ListPipelines, pb.ListPipelinesRequest(), timeout)

    def add_documents(
        self, pipeline: str, documents: Iterable[tuple[str, str]], timeout: float | None = None
    ) -> pb.UpdateResponse:
        docs = [pb.Document(id=doc_id, text=text) for doc_id, text in documents]
        return self._call(self.stub.AddDocuments, pb.AddDocumentsRequest(pipeline=pipeline, documents=docs), timeout)

    def upsert_documents(
        self, pipeline: str, documents: Iterable[tuple[str, str]], timeout: float | None = None
    ) -> pb.UpdateResponse:
        docs = [pb.Document(id=doc_id, text=text) for doc_id, text in documents]
        request = pb.AddDocumentsRequest(pipeline=pipeline, documents=docs)
        return self._call(self.stub.UpsertDocuments, request, timeout)

    def delete_documents(self, pipeline: str, ids: Iterable[str], timeout: float | None = None) -> pb.UpdateResponse:
        request = pb.DeleteDocumentsRequest(pipeline=pipeline, ids=list(ids))
        return self._call(self.stub.DeleteDocuments, request, timeout)

    def reload(self, pipeline: str = "", timeout: float | None = None) -> pb.ReloadResponse:
        return self._call(self.stub.Reload, pb.ReloadRequest(pipeline=pipeline), timeout)

    def health_status(self, service: str = "", timeout: float | None = None) -> str:
        response = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout or self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> BraidClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
