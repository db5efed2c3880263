//! Support for Loupe's end-to-end tests: starting real processes over real mTLS.
