"""The front of `mp-deploy serve`: the public HTTP and gRPC endpoints, opened only once tritonserver (on internal
ports, mp_deploy.serve.tritonserver) has every model loaded and warmed up, so that "ready" means ready from the
first answer; closed when it stops.

Every inference request is checked first (mp_deploy.serve.requests: shape, datatype, sizes, uint8 range) and
refused there with HTTP 400/404/413 or gRPC INVALID_ARGUMENT/NOT_FOUND naming the rule; a request that passes is
forwarded byte for byte with the internal server's key (without it, tritonserver's inference and other restricted
APIs refuse). Health, metadata, model configs and statistics are forwarded as they are; shared memory, repository
control, trace and logging are not served.
"""
from __future__ import annotations

import asyncio
import re

import grpc

from mp_deploy.serve.requests import BadRequest, check_grpc_infer, check_http_infer, largest_request
from mp_deploy.serve.tritonserver import KEY_HEADER

INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/infer$")
NOT_SERVED = re.compile(r"^/v2/(systemsharedmemory|cudasharedmemory|repository|trace|logging)(/|$)")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", KEY_HEADER}
GRPC_KEY = f"triton-grpc-protocol-{KEY_HEADER}"  # tritonserver's name for the restricted-protocol metadata
GRPC = "/inference.GRPCInferenceService/"
GRPC_INFER = GRPC + "ModelInfer"
GRPC_FORWARDED = {GRPC + m for m in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                                     "ModelConfig", "ModelStatistics", "ModelInfer")}


def http_app(upstream: str, rules: dict, key: str | None):
    """The HTTP front: `upstream` the internal server's URL; `key` added to checked infer requests (None: a
    metrics front, which only forwards GETs)."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    limit = largest_request(rules)
    state = {}

    async def start(app):
        state["session"] = ClientSession(connector=TCPConnector(limit=256), timeout=ClientTimeout(total=None),
                                         auto_decompress=False)

    async def stop(app):
        await state["session"].close()

    def refuse(message: str, status: int):
        return web.json_response({"error": message}, status=status)

    async def handle(request):
        path = request.rel_url.path
        infer = INFER.match(path) if key is not None and request.method == "POST" else None
        if NOT_SERVED.match(path) or (request.method not in ("GET", "HEAD") and infer is None):
            return refuse(f"{request.method} {path} is not served here", 403)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        if infer is not None:
            if request.headers.get("Content-Encoding", "identity") not in ("identity", ""):
                return refuse("compressed requests are not accepted", 415)
            if request.content_length is not None and request.content_length > limit:
                return refuse(f"the request has {request.content_length} bytes, more than any served model "
                              f"takes ({limit})", 413)
            body = await request.read()
            try:
                check_http_infer(rules, infer.group(1), body, request.headers.get("Inference-Header-Content-Length"))
            except BadRequest as e:
                return refuse(str(e), e.status)
            headers[KEY_HEADER] = key
        else:
            body = None
        async with state["session"].request(request.method, upstream + str(request.rel_url), data=body,
                                            headers=headers) as answer:
            data = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=data, headers=out)

    async def too_large(request, handler):  # aiohttp's own size refusal (a body past client_max_size) as our 413
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge as e:
            return refuse(f"the request is too large: {e.text}", 413)

    app = web.Application(client_max_size=limit + 1, middlewares=[web.middleware(too_large)])
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class GRPCFront(grpc.GenericRpcHandler):
    """The gRPC front: the KServe v2 methods clients use forwarded as bytes, ModelInfer checked first; the rest
    (streaming, shared memory, repository control, trace, logging) UNIMPLEMENTED here."""

    def __init__(self, channel, rules: dict, key: str):
        self.channel, self.rules, self.key = channel, rules, key

    def service(self, details):
        method = details.method
        if method not in GRPC_FORWARDED:
            return grpc.unary_unary_rpc_method_handler(self.refused(method))
        return grpc.unary_unary_rpc_method_handler(self.forward(method))

    @staticmethod
    def refused(method: str):
        async def handler(request, context):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served here")
        return handler

    def forward(self, method: str):
        call = self.channel.unary_unary(method)  # bytes in, bytes out

        async def handler(request: bytes, context):
            metadata = [(k, v) for k, v in context.invocation_metadata() if k.lower() not in (KEY_HEADER, GRPC_KEY)]
            if method == GRPC_INFER:
                from tritonclient.grpc import service_pb2

                try:
                    check_grpc_infer(self.rules, service_pb2.ModelInferRequest.FromString(request))
                except BadRequest as e:
                    await context.abort(grpc.StatusCode.NOT_FOUND if e.status == 404 else
                                        grpc.StatusCode.INVALID_ARGUMENT, str(e))
                except Exception as e:  # a protobuf that does not decode
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a ModelInferRequest ({e})")
                metadata.append((GRPC_KEY, self.key))
            try:
                return await call(request, metadata=metadata, timeout=context.time_remaining())
            except grpc.aio.AioRpcError as e:
                await context.abort(e.code(), e.details())
        return handler


class Front:
    """Both endpoints of the front, started together once the internal server is ready."""

    def __init__(self, internal: dict, public: dict, address: str, rules: dict, key: str):
        self.internal, self.public, self.address, self.rules, self.key = internal, public, address, rules, key
        self.runner = self.server = self.channel = None

    async def start(self) -> None:
        from aiohttp import web

        limit = largest_request(self.rules)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.internal['grpc']}", options=[
            ("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", -1)])
        self.server = grpc.aio.server(handlers=[GRPCFront(self.channel, self.rules, self.key)], options=[
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0)])
        if not self.server.add_insecure_port(f"{self.address}:{self.public['grpc']}"):
            raise OSError(f"cannot listen on {self.address}:{self.public['grpc']} (gRPC)")
        self.runner = web.AppRunner(http_app(f"http://127.0.0.1:{self.internal['http']}", self.rules, self.key),
                                    access_log=None)
        await self.runner.setup()
        await self.server.start()
        await web.TCPSite(self.runner, self.address, self.public["http"], reuse_port=False).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.server is not None:
            await self.server.stop(2)
        if self.channel is not None:
            await self.channel.close()


async def run_until(front: Front, stop: asyncio.Event, alive, poll_s: float = 0.5) -> str:
    """Serve until `stop` is set (-> "stopped") or alive() turns false (-> "died")."""
    await front.start()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), poll_s)
            except asyncio.TimeoutError:
                if not alive():
                    return "died"
        return "stopped"
    finally:
        await front.stop()
