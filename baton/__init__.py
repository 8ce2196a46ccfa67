"""Baton for its callers: `baton.client` (the edge's REST and Socket.IO API, and
helpers over the gRPC stubs), and the stubs generated from protos/ by `make proto`
(`baton.session.v1`, `baton.display.v1`, `baton.automation.v1`)."""
