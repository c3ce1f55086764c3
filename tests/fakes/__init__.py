"""Local fake servers that speak the real wire protocols (HTTP/SSE, WebSocket, gRPC) to
the real client libraries, on loopback, started by the tests that use them."""
