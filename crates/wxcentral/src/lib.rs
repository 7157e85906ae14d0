//! wxcentral's HTTP server.
