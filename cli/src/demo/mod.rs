//! The demo checkout service: a small HTTP service with snapshot points and its own synthetic
//! traffic, for the quickstart and for trying Loupe by hand.
