//! A faithful simulator of the WeChat API server.
