"""The floor of the HTTP stack: an endpoint that does nothing, on the prediction service's stack.

`python -m uvicorn benchmarks.empty_app:app` (FastAPI on uvicorn, one process, as `sms-assets serve`):
whatever a request to it costs is what HTTP, the server and the framework cost before any work.
"""

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/empty")
async def empty(request: Request) -> Response:
    await request.body()  # read the body, as every real endpoint must
    return Response(b"{}", media_type="application/json")


@app.get("/health")
async def health() -> Response:
    return Response(b"{}", media_type="application/json")
