//! The typed client of chatd's public API (feature `client`): HTTP routes,
//! and chat streams over WebSocket or SSE. Used by tests and the load test.
