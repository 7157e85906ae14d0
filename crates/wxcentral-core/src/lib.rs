//! wxcentral's credential engine.
